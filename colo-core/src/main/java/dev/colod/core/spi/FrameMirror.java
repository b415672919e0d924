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

        @Override
        public boolean comparing()
        {
            return false;
        }
    };

    /**
     * What a primary of this build says it reads on the frames channel, in its HELLO's shape field (ignored there by
     * older secondaries): TCP records with the copy's window (kind 5). A secondary sends kind 5 only to a primary that
     * says so, since an older one ends the channel on an unknown kind.
     */
    String FEATURE_TCP_WINDOW = "tcp-window";

    /** What this build's primary sends in the frames HELLO's shape field: its features, space-separated. */
    String FEATURES = FEATURE_TCP_WINDOW;

    /** The features a frames HELLO's shape field lists (empty from an older primary). */
    static java.util.Set<String> features(final byte[] shape)
    {
        final String s = new String(shape, java.nio.charset.StandardCharsets.UTF_8).trim();
        return s.isEmpty() ? java.util.Set.of() : java.util.Set.copyOf(java.util.Arrays.asList(s.split(" +")));
    }

    /** The session's frames channel is {@code socket} (its handshake done): run it until {@link #detach}. */
    void attach(Socket socket, String peer) throws IOException;

    /** As above, with what the primary said it reads ({@code features}, e.g. {@link #FEATURE_TCP_WINDOW}). */
    default void attach(final Socket socket, final String peer, final java.util.Set<String> features) throws IOException
    {
        attach(socket, peer);
    }

    /**
     * Primary: true while the channel runs, so output is released by comparison; false before it is attached and once
     * it ended (the engine then takes checkpoints for held output as in periodic mode, instead of letting it wait
     * for the interval).
     */
    default boolean comparing()
    {
        return true;
    }

    /** The session ended: close the channel and forget what was pending. Never throws. */
    void detach();
}
