package dev.colod.buffer.hybrid;

import dev.colod.core.Closeables;
import dev.colod.core.spi.FrameMirror;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.IntFunction;

/**
 * The primary's side of hybrid mode's frames channel: copies every frame that arrives for the VM to the
 * secondary, in arrival order per NIC with an era marker at each checkpoint ({@link InboundSink}, called by the
 * NIC ledgers on their loop), and hands the secondary's digests to each NIC's {@link Comparer} on its loop.
 * <p>
 * Threads: the NIC loops enqueue (never block: a full queue drops the copy, counted; the secondary then misses a
 * frame, its guest answers differently or not at all, and comparison asks for a checkpoint: slower, never
 * unsafe); one sender thread writes the queue to the socket; one reader thread reads digests.
 */
public final class PrimaryMirror implements FrameMirror, InboundSink
{
    private static final Logger LOG = LoggerFactory.getLogger(PrimaryMirror.class);
    private static final int QUEUE = 16384;

    /** Where one NIC's digests go (on that NIC's loop). */
    public interface NicSide
    {
        void secondaryEra(long era, long nowNs);

        void digest(long era, byte[] body, long nowNs);

        /** {@code window}: the copy's window field, -1 if the secondary did not send it (kind 4). */
        void tcp(long era, byte[] body, int length, int window, long nowNs);
    }

    private final String vm;
    private final IntFunction<NicSide> nics;
    private final int nicCount;
    private volatile Session session;
    private volatile long inboundCopied;
    private volatile long inboundDropped;
    private volatile long digestsReceived;
    private volatile long bytesSent;

    /** {@code nics}: NIC index to where its digests go, for indexes {@code 0..nicCount-1}. */
    public PrimaryMirror(final String vm, final int nicCount, final IntFunction<NicSide> nics)
    {
        this.vm = vm;
        this.nicCount = nicCount;
        this.nics = nics;
    }

    @Override
    public void attach(final Socket socket, final String peer) throws IOException
    {
        detach();
        final Session s = new Session(socket, peer);
        session = s;
        s.start();
        LOG.info("vm={} frames channel to {} open: inbound frames are copied, digests compared", vm, peer);
    }

    @Override
    public void detach()
    {
        final Session s = session;
        session = null;
        if (s != null)
        {
            s.close();
        }
    }

    @Override
    public void inbound(final int nic, final ByteBuffer buf, final int off, final int len)
    {
        final Session s = session;
        if (s == null)
        {
            return;
        }
        final byte[] copy = new byte[len + 4];
        copy[0] = FramesCodec.INBOUND;
        copy[1] = (byte)nic;
        copy[2] = (byte)(len >>> 8);
        copy[3] = (byte)len;
        buf.get(off, copy, 4, len);
        if (s.queue.offer(copy))
        {
            inboundCopied++;
        }
        else
        {
            inboundDropped++;
        }
    }

    @Override
    public void era(final int nic, final long epoch)
    {
        final Session s = session;
        if (s == null)
        {
            return;
        }
        final byte[] rec = new byte[12];
        rec[0] = FramesCodec.ERA;
        rec[1] = (byte)nic;
        rec[3] = 8;
        for (int i = 0; i < 8; i++)
        {
            rec[4 + i] = (byte)(epoch >>> (56 - 8 * i));
        }
        if (!s.queue.offer(rec))
        {
            inboundDropped++;
        }
    }

    @Override
    public boolean comparing()
    {
        final Session s = session;
        return s != null && !s.ended;
    }

    public Stats stats()
    {
        return new Stats(comparing(), inboundCopied, inboundDropped, digestsReceived, bytesSent);
    }

    /**
     * The channel as counted: open (it runs; false before it is attached and once it failed either way), frames
     * copied to the secondary and dropped (queue full), digests received.
     */
    public record Stats(boolean open, long inboundCopied, long inboundDropped, long digestsReceived, long bytesSent)
    {
    }

    private final class Session
    {
        final Socket socket;
        final String peer;
        final BlockingQueue<byte[]> queue = new ArrayBlockingQueue<>(QUEUE);
        final Thread sender;
        final Thread reader;
        volatile boolean closed;
        /** The channel failed either way (comparison stopped). */
        volatile boolean ended;

        Session(final Socket socket, final String peer)
        {
            this.socket = socket;
            this.peer = peer;
            this.sender = new Thread(this::send, "colo-primary-" + vm + "-frames-out");
            this.reader = new Thread(this::read, "colo-primary-" + vm + "-frames-in");
            sender.setDaemon(true);
            reader.setDaemon(true);
        }

        void start()
        {
            sender.start();
            reader.start();
        }

        private void send()
        {
            try
            {
                final DataOutputStream out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 1 << 16));
                while (!closed)
                {
                    byte[] rec = queue.poll(100, TimeUnit.MILLISECONDS);
                    while (rec != null)
                    {
                        out.write(rec);
                        bytesSent += rec.length;
                        rec = queue.poll();
                    }
                    out.flush();
                }
            }
            catch (final IOException ex)
            {
                ended = true;
                if (!closed)
                {
                    LOG.warn("vm={} frames channel to {}: sending failed: {}", vm, peer, ex.toString());
                }
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
            }
        }

        private void read()
        {
            long theirEra = -1;
            try
            {
                final DataInputStream in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
                final FramesCodec.Record r = new FramesCodec.Record();
                while (FramesCodec.read(in, r, peer))
                {
                    final long now = System.nanoTime();
                    if (r.kind == FramesCodec.ERA)
                    {
                        theirEra = r.be64();
                        final long era = theirEra;
                        for (int n = 0; n < nicCount; n++)
                        {
                            nics.apply(n).secondaryEra(era, now);
                        }
                    }
                    else if (r.kind == FramesCodec.DIGEST || r.kind == FramesCodec.TCP || r.kind == FramesCodec.TCP_WINDOW)
                    {
                        if (r.nic >= nicCount)
                        {
                            throw new IOException("frames channel from " + peer + ": output of NIC " + r.nic +
                                " of a VM with " + nicCount);
                        }
                        digestsReceived++;
                        if (r.kind == FramesCodec.TCP_WINDOW)
                        {
                            // as kind 4 without the window field, and the window beside it
                            final int window = (r.body[17] & 0xFF) << 8 | r.body[18] & 0xFF;
                            final byte[] body = new byte[r.length - 2];
                            System.arraycopy(r.body, 0, body, 0, FramesCodec.TCP_HEADER);
                            System.arraycopy(r.body, FramesCodec.TCP_WINDOW_HEADER, body, FramesCodec.TCP_HEADER,
                                r.length - FramesCodec.TCP_WINDOW_HEADER);
                            nics.apply(r.nic).tcp(theirEra, body, body.length, window, now);
                            continue;
                        }
                        final byte[] body = Arrays.copyOf(r.body, r.length);
                        if (r.kind == FramesCodec.TCP)
                        {
                            nics.apply(r.nic).tcp(theirEra, body, body.length, -1, now);
                        }
                        else
                        {
                            nics.apply(r.nic).digest(theirEra, body, now);
                        }
                    }
                    else
                    {
                        throw new IOException("frames channel from " + peer + ": record kind " + r.kind +
                            " goes from primary to secondary, not back");
                    }
                }
                ended = true; // the secondary closed it
            }
            catch (final IOException ex)
            {
                ended = true;
                if (!closed)
                {
                    // comparison stops: held output asks for checkpoints as in periodic mode; the session's own
                    // channels decide its end
                    LOG.warn("vm={} frames channel from {} ended: {}; held output leaves at checkpoints it starts, as " +
                        "in periodic mode", vm, peer, ex.getMessage());
                }
            }
        }

        void close()
        {
            closed = true;
            Closeables.closeQuietly(socket);
            sender.interrupt();
            join(sender);
            join(reader);
        }

        private void join(final Thread t)
        {
            try
            {
                t.join(5000);
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
            }
        }
    }
}
