package dev.colod.agent.tls;

import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.SocketException;
import java.nio.channels.SocketChannel;
import java.security.SecureRandom;
import javax.net.ssl.SSLSocket;

/**
 * A replication channel after its mutual-TLS 1.3 handshake, carried on the plain socket underneath in sealed chunks
 * (docs/PROTOCOL.md section 11): both ends offered {@link #ALPN} in the handshake and agreed on it. Each end then sends
 * {@link #SECRET_BYTES} random bytes inside the TLS session; the opener's followed by the listener's are the secret
 * both directions' keys are derived from. After that neither end reads or writes a TLS record again: the
 * {@link SSLSocket} is kept (it holds the authenticated session) but never closed, since its close_notify would land
 * inside the sealed stream.
 * <p>
 * Writes go out at once, each as one chunk (or several past the chunk size), as an SSLSocket's writes go out as
 * records, so code written for either needs no extra flush. Closing the output stream and {@link #shutdownOutput}
 * send the closing chunk (the reader sees a clean end); {@link #close} closes the plain socket without it, as an
 * abort: writing could block on a peer that no longer reads, so that peer sees a stream that was closed or cut,
 * which ends a session either way.
 */
final class SealedSocket extends Socket
{
    /** The ALPN protocol id both ends offer to agree on sealed chunks after the handshake. */
    static final String ALPN = "colod-sealed-1";
    static final int SECRET_BYTES = 32;
    /**
     * The largest chunk a write goes out in (the checkpoint stream writes ~256 KiB at a time: one chunk and a
     * small one). 256 KiB carried 0.75x plaintext in SealedBench where 16 KiB chunks (JSSE's record size) carried
     * 0.53x; calls of 1 MiB were never compiled by the JIT on their own (BENCHMARKS.md "TLS").
     */
    static final int CHUNK_BYTES = 256 << 10;
    private static final SecureRandom RANDOM = new SecureRandom();

    private final Socket raw;
    private final SSLSocket tls;
    private final SealedChunks.Output sealedOut;
    private final InputStream in;
    private final OutputStream out;
    private volatile boolean closed;

    private SealedSocket(final Socket raw, final SSLSocket tls, final SealedChunks.Keys outKeys,
        final SealedChunks.Keys inKeys) throws IOException
    {
        this.raw = raw;
        this.tls = tls;
        this.sealedOut = new SealedChunks.Output(raw.getOutputStream(), outKeys, CHUNK_BYTES);
        final SealedChunks.Input sealedIn = new SealedChunks.Input(raw.getInputStream(), inKeys);
        this.out = new OutputStream()
        {
            @Override
            public void write(final int b) throws IOException
            {
                write(new byte[]{(byte)b}, 0, 1);
            }

            @Override
            public synchronized void write(final byte[] b, final int off, final int len) throws IOException
            {
                sealedOut.writeNow(b, off, len);
            }

            /** The closing chunk (a deliberate end: the reader sees a clean end of stream), then the socket closes. */
            @Override
            public void close() throws IOException
            {
                try
                {
                    if (!isClosed())
                    {
                        synchronized (this)
                        {
                            sealedOut.finish();
                        }
                    }
                }
                finally
                {
                    SealedSocket.this.close();
                }
            }
        };
        this.in = new InputStream()
        {
            @Override
            public int read() throws IOException
            {
                return sealedIn.read();
            }

            @Override
            public int read(final byte[] b, final int off, final int len) throws IOException
            {
                return sealedIn.read(b, off, len);
            }

            @Override
            public int available()
            {
                return sealedIn.available();
            }

            @Override
            public void close() throws IOException
            {
                SealedSocket.this.close();
            }
        };
    }

    /**
     * Exchanges the secret inside {@code tls} (handshake done, peer checked) and returns the channel on {@code raw}
     * under sealed chunks. {@code opener}: this end opened the connection (the primary).
     */
    static SealedSocket over(final SSLSocket tls, final Socket raw, final boolean opener) throws IOException
    {
        final byte[] mine = new byte[SECRET_BYTES];
        RANDOM.nextBytes(mine);
        final OutputStream o = tls.getOutputStream();
        o.write(mine);
        o.flush();
        final byte[] theirs = new byte[SECRET_BYTES];
        new DataInputStream(tls.getInputStream()).readFully(theirs);
        final byte[] secret = new byte[2 * SECRET_BYTES];
        System.arraycopy(opener ? mine : theirs, 0, secret, 0, SECRET_BYTES);
        System.arraycopy(opener ? theirs : mine, 0, secret, SECRET_BYTES, SECRET_BYTES);
        return new SealedSocket(raw, tls, SealedChunks.Keys.derive(secret, opener), SealedChunks.Keys.derive(secret, !opener));
    }

    /** The TLS socket whose session authenticated the peer (its handshake is all it carried, with the secret). */
    SSLSocket tls()
    {
        return tls;
    }

    @Override
    public InputStream getInputStream() throws IOException
    {
        ensureOpen();
        return in;
    }

    @Override
    public OutputStream getOutputStream() throws IOException
    {
        ensureOpen();
        return out;
    }

    private void ensureOpen() throws SocketException
    {
        if (closed)
        {
            throw new SocketException("Socket is closed");
        }
    }

    @Override
    public void close() throws IOException
    {
        closed = true;
        raw.close();
    }

    @Override
    public boolean isClosed()
    {
        return closed || raw.isClosed();
    }

    /** Sends the closing chunk, then half-closes the plain socket. */
    @Override
    public void shutdownOutput() throws IOException
    {
        synchronized (out)
        {
            sealedOut.finish();
        }
        raw.shutdownOutput();
    }

    @Override
    public void shutdownInput() throws IOException
    {
        raw.shutdownInput();
    }

    @Override
    public boolean isInputShutdown()
    {
        return raw.isInputShutdown();
    }

    @Override
    public boolean isOutputShutdown()
    {
        return raw.isOutputShutdown();
    }

    @Override
    public void connect(final SocketAddress endpoint, final int timeout) throws IOException
    {
        throw new SocketException("already connected");
    }

    @Override
    public void bind(final SocketAddress bindpoint) throws IOException
    {
        throw new SocketException("already bound");
    }

    @Override
    public SocketChannel getChannel()
    {
        return null;
    }

    @Override
    public boolean isConnected()
    {
        return raw.isConnected();
    }

    @Override
    public boolean isBound()
    {
        return raw.isBound();
    }

    @Override
    public InetAddress getInetAddress()
    {
        return raw.getInetAddress();
    }

    @Override
    public int getPort()
    {
        return raw.getPort();
    }

    @Override
    public InetAddress getLocalAddress()
    {
        return raw.getLocalAddress();
    }

    @Override
    public int getLocalPort()
    {
        return raw.getLocalPort();
    }

    @Override
    public SocketAddress getRemoteSocketAddress()
    {
        return raw.getRemoteSocketAddress();
    }

    @Override
    public SocketAddress getLocalSocketAddress()
    {
        return raw.getLocalSocketAddress();
    }

    @Override
    public void setSoTimeout(final int timeout) throws SocketException
    {
        raw.setSoTimeout(timeout);
    }

    @Override
    public int getSoTimeout() throws SocketException
    {
        return raw.getSoTimeout();
    }

    @Override
    public void setTcpNoDelay(final boolean on) throws SocketException
    {
        raw.setTcpNoDelay(on);
    }

    @Override
    public boolean getTcpNoDelay() throws SocketException
    {
        return raw.getTcpNoDelay();
    }

    @Override
    public void setKeepAlive(final boolean on) throws SocketException
    {
        raw.setKeepAlive(on);
    }

    @Override
    public boolean getKeepAlive() throws SocketException
    {
        return raw.getKeepAlive();
    }

    @Override
    public void setSoLinger(final boolean on, final int linger) throws SocketException
    {
        raw.setSoLinger(on, linger);
    }

    @Override
    public int getSoLinger() throws SocketException
    {
        return raw.getSoLinger();
    }

    @Override
    public void setSendBufferSize(final int size) throws SocketException
    {
        raw.setSendBufferSize(size);
    }

    @Override
    public int getSendBufferSize() throws SocketException
    {
        return raw.getSendBufferSize();
    }

    @Override
    public void setReceiveBufferSize(final int size) throws SocketException
    {
        raw.setReceiveBufferSize(size);
    }

    @Override
    public int getReceiveBufferSize() throws SocketException
    {
        return raw.getReceiveBufferSize();
    }

    @Override
    public String toString()
    {
        return "SealedSocket[" + tls.getSession().getProtocol() + " " + tls.getSession().getCipherSuite() +
            ", sealed chunks, " + raw + "]";
    }
}
