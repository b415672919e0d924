package dev.colod.core.spi;

import java.io.IOException;
import java.net.Socket;

/**
 * One side of hybrid mode's frames channel (docs/PROTOCOL.md section 10). The primary's copies what arrives for
 * the VM to the secondary and compares the secondary's digests with its own output; the secondary's injects those
 * frames into its running copy and digests what the copy sends. The engine opens (primary) or accepts
 * (secondary) the channel of each hybrid session and hands it over here; everything else is the mirror's.
 */
public interface FrameMirror
{
    /**
     * No frames side: periodic modes, a primary without output commit, engines tested without a VM. It closes the
     * channel it is given (the peer's side then stops comparing or injecting); a secondary with it does not wait for
     * one.
     */
    FrameMirror NONE = new FrameMirror()
    {
        @Override
        public void attach(final Socket socket, final String peer)
        {
            try
            {
                socket.close();
            }
            catch (final IOException ignore)
            {
                // nothing to tell
            }
        }

        @Override
        public void detach()
        {
        }
    };

    /** The session's frames channel is {@code socket} (its handshake done): run it until {@link #detach}. */
    void attach(Socket socket, String peer) throws IOException;

    /** The session ended: close the channel and forget what was pending. Never throws. */
    void detach();
}
