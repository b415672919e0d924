package dev.colod.buffer.hybrid;

import com.sun.jna.Memory;
import dev.colod.core.Closeables;
import dev.colod.core.spi.FrameMirror;
import dev.colod.os.LibC;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.List;

/**
 * The secondary's side of hybrid mode's frames channel: injects the frames the primary copies into the running
 * copy of the VM (through each NIC's {@link CopyTap}), in order, each into the copy of the era it belongs to, and
 * sends the primary a digest of every frame the copy's guest sends ({@link FrameDigest}, after the
 * {@link TcpRewriter}), preceded by an era marker whenever a new copy resumes.
 * <p>
 * Era of an inbound frame: the id of the last checkpoint the primary paused for before the frame arrived. A frame
 * of the running copy's era is injected at once; an older one is in the state the copy was loaded from (or lost
 * with a copy that was replaced) and is dropped, counted; a newer one waits until the copy of its era resumes.
 * <p>
 * Threads: the session's (for {@link #resuming} and {@link #suspending}); a reader thread (inbound records, injection)
 * and a capture thread (poll on the agent taps, digests) per attached channel. The copy's state is guarded by
 * this object; the socket's output by the session's writer lock.
 */
public final class CopyMirror implements FrameMirror
{
    private static final Logger LOG = LoggerFactory.getLogger(CopyMirror.class);
    /** Frames of a later era kept at most while their copy is not running yet. */
    private static final int MAX_WAITING = 16384;
    private static final int FRAME_MAX = 65536;

    private record Waiting(int nic, long era, byte[] frame)
    {
    }

    private final String vm;
    private final TcpRewriter rewriter = new TcpRewriter();
    private volatile Session session;
    /** Guarded by this. */
    private long copyEra = -1;
    private boolean copyRunning;
    private List<CopyTap> taps = List.of();
    private long generation;
    private final long[] inboundEra = new long[FramesCodec.ALL_NICS];
    private final ArrayDeque<Waiting> waiting = new ArrayDeque<>();
    private final ByteBuffer injectBuf = ByteBuffer.allocateDirect(FRAME_MAX);

    private volatile long injected;
    private volatile long inboundStale;
    private volatile long inboundOverflow;
    private volatile long captured;
    private volatile long digestsSent;
    private volatile long announcements;

    public CopyMirror(final String vm)
    {
        this.vm = vm;
        Arrays.fill(inboundEra, -1);
    }

    @Override
    public void attach(final Socket socket, final String peer) throws IOException
    {
        attach(socket, peer, java.util.Set.of());
    }

    /** {@code features}: what the primary reads; with {@link #FEATURE_TCP_WINDOW} TCP records carry the window (kind 5). */
    @Override
    public void attach(final Socket socket, final String peer, final java.util.Set<String> features) throws IOException
    {
        detach();
        final Session s = new Session(socket, peer, features.contains(FEATURE_TCP_WINDOW));
        synchronized (this)
        {
            Arrays.fill(inboundEra, -1);
            waiting.clear();
            session = s;
        }
        s.start();
        LOG.info("vm={} frames channel from {} open: the running copy gets the primary's inbound frames", vm, peer);
    }

    @Override
    public void detach()
    {
        final Session s;
        synchronized (this)
        {
            s = session;
            session = null;
            waiting.clear();
        }
        if (s != null)
        {
            s.close();
        }
    }

    /**
     * The copy that holds checkpoint {@code era} is about to run, its NICs on {@code nics}: tell the primary (before
     * the copy sends anything), forget the rewriter's connections, inject what waited for this era.
     */
    public synchronized void resuming(final long era, final List<CopyTap> nics)
    {
        copyEra = era;
        taps = List.copyOf(nics);
        generation++;
        copyRunning = true;
        rewriter.reset();
        final Session s = session;
        if (s != null)
        {
            s.writeEra(era);
        }
        final int n = waiting.size();
        for (int i = 0; i < n; i++)
        {
            final Waiting w = waiting.pollFirst();
            if (w.era == copyEra)
            {
                inject(w.nic, w.frame, w.frame.length);
            }
            else if (w.era < copyEra)
            {
                inboundStale++;
            }
            else
            {
                waiting.addLast(w);
            }
        }
    }

    /** The copy is paused for a checkpoint and will be replaced: nothing more is injected into it. */
    public synchronized void suspending()
    {
        copyRunning = false;
    }

    /**
     * The copies are gone (failover, close): the channel ends and no tap is read any more, so the caller may close
     * them when this returns.
     */
    public void stopped()
    {
        detach();
        synchronized (this)
        {
            copyRunning = false;
            taps = List.of();
            generation++;
        }
    }

    private synchronized void onInbound(final int nic, final byte[] frame, final int len)
    {
        final long era = inboundEra[nic];
        if (era == copyEra && copyRunning)
        {
            inject(nic, frame, len);
        }
        else if (era <= copyEra || era < 0)
        {
            inboundStale++;
        }
        else if (waiting.size() < MAX_WAITING)
        {
            waiting.addLast(new Waiting(nic, era, Arrays.copyOf(frame, len)));
        }
        else
        {
            inboundOverflow++;
        }
    }

    private synchronized void onEra(final int nic, final long era)
    {
        if (nic < inboundEra.length)
        {
            inboundEra[nic] = era;
        }
    }

    /** Under this object's lock. */
    private void inject(final int nic, final byte[] frame, final int len)
    {
        if (nic >= taps.size())
        {
            inboundStale++;
            return;
        }
        rewriter.inbound(frame, 0, len);
        injectBuf.clear();
        injectBuf.put(0, frame, 0, len);
        try
        {
            if (taps.get(nic).agentTap().fd().write(injectBuf, 0, len) == len)
            {
                injected++;
                return;
            }
        }
        catch (final IOException ex)
        {
            LOG.debug("vm={} injecting a {}-byte frame into the running copy failed: {}", vm, len, ex.toString());
        }
        inboundOverflow++;
    }

    /** The sequence rewriter: after a failover to the running copy it goes on rewriting in the data path. */
    public TcpRewriter rewriter()
    {
        return rewriter;
    }

    public Stats stats()
    {
        return new Stats(session != null, injected, inboundStale, inboundOverflow, captured, announcements,
            digestsSent, rewriter.learned(), rewriter.rewrittenInbound());
    }

    /** The secondary's side as counted. */
    public record Stats(boolean open, long injected, long inboundStale, long inboundOverflow, long captured,
        long announcements, long digestsSent, long connectionsRewritten, long acksRewritten)
    {
    }

    private final class Session
    {
        final Socket socket;
        final String peer;
        final DataOutputStream out;
        final Thread reader;
        final Thread capture;
        /** TCP records as kind 5, with the copy's window: the primary said it reads them. */
        final boolean windows;
        volatile boolean closed;

        Session(final Socket socket, final String peer, final boolean windows) throws IOException
        {
            this.socket = socket;
            this.peer = peer;
            this.windows = windows;
            this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 1 << 16));
            this.reader = new Thread(this::read, "colo-secondary-" + vm + "-frames-in");
            this.capture = new Thread(this::capture, "colo-secondary-" + vm + "-copy-capture");
            reader.setDaemon(true);
            capture.setDaemon(true);
        }

        void start()
        {
            reader.start();
            capture.start();
        }

        void writeEra(final long era)
        {
            synchronized (out)
            {
                try
                {
                    FramesCodec.writeEra(out, FramesCodec.ALL_NICS, era);
                    out.flush();
                }
                catch (final IOException ex)
                {
                    failed(ex);
                }
            }
        }

        private void failed(final IOException ex)
        {
            if (!closed)
            {
                LOG.warn("vm={} frames channel to {}: {}", vm, peer, ex.toString());
                closed = true;
                Closeables.closeQuietly(socket);
            }
        }

        private void read()
        {
            try
            {
                final DataInputStream in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
                final FramesCodec.Record r = new FramesCodec.Record();
                while (!closed && FramesCodec.read(in, r, peer))
                {
                    if (r.kind == FramesCodec.INBOUND)
                    {
                        onInbound(r.nic, r.body, r.length);
                    }
                    else if (r.kind == FramesCodec.ERA)
                    {
                        onEra(r.nic, r.be64());
                    }
                    else
                    {
                        throw new IOException("frames channel from " + peer + ": record kind " + r.kind +
                            " goes from secondary to primary, not here");
                    }
                }
            }
            catch (final IOException ex)
            {
                failed(ex);
            }
        }

        private void capture()
        {
            final FrameDigest digester = new FrameDigest();
            final ByteBuffer buf = ByteBuffer.allocateDirect(FRAME_MAX);
            final byte[] frame = new byte[FRAME_MAX];
            final byte[] rec = new byte[FramesCodec.TCP_WINDOW_HEADER + FRAME_MAX];
            Memory fds = new Memory(8);
            while (!closed)
            {
                final List<CopyTap> now;
                final long gen;
                synchronized (CopyMirror.this)
                {
                    now = taps;
                    gen = generation;
                }
                if (now.isEmpty())
                {
                    sleep();
                    continue;
                }
                if (fds.size() < 8L * now.size())
                {
                    fds = new Memory(8L * now.size());
                }
                for (int i = 0; i < now.size(); i++)
                {
                    fds.setInt(8L * i, now.get(i).agentTap().fd().intValue());
                    fds.setShort(8L * i + 4, LibC.POLLIN);
                    fds.setShort(8L * i + 6, (short)0);
                }
                if (LibC.poll(fds, now.size(), 50) <= 0)
                {
                    continue;
                }
                boolean any = false;
                for (int nic = 0; nic < now.size(); nic++)
                {
                    for (int k = 0; k < 256; k++)
                    {
                        final int len;
                        try
                        {
                            len = now.get(nic).agentTap().fd().read(buf, 0, FRAME_MAX);
                        }
                        catch (final IOException ex)
                        {
                            break; // the copy went away meanwhile: its taps are replaced
                        }
                        if (len <= 0)
                        {
                            break;
                        }
                        captured++;
                        buf.get(0, frame, 0, len);
                        if (FrameDigest.selfAnnouncement(frame, 0, len))
                        {
                            announcements++;
                            continue;
                        }
                        rewriter.outbound(frame, 0, len);
                        final long flow = FrameDigest.flow(frame, 0, len);
                        for (int i = 0; i < 8; i++)
                        {
                            rec[i] = (byte)(flow >>> (56 - 8 * i));
                        }
                        final Segment seg = Segment.of(frame, 0, len);
                        if (seg != null)
                        {
                            FrameDigest.putBe32(rec, 8, seg.seq());
                            FrameDigest.putBe32(rec, 12, seg.ack());
                            rec[16] = (byte)seg.flags();
                            rec[17] = (byte)(seg.window() >>> 8);
                            rec[18] = (byte)seg.window();
                            final int header = windows ? FramesCodec.TCP_WINDOW_HEADER : FramesCodec.TCP_HEADER;
                            final int n = seg.payload().length;
                            System.arraycopy(seg.payload(), 0, rec, header, n);
                            any |= send(windows ? FramesCodec.TCP_WINDOW : FramesCodec.TCP, nic, rec, header + n, gen);
                        }
                        else
                        {
                            digester.digest(frame, 0, len, rec, 8);
                            any |= send(FramesCodec.DIGEST, nic, rec, FramesCodec.DIGEST_LENGTH, gen);
                        }
                    }
                }
                if (any)
                {
                    synchronized (out)
                    {
                        try
                        {
                            out.flush();
                        }
                        catch (final IOException ex)
                        {
                            failed(ex);
                        }
                    }
                }
            }
        }

        /** Sends one record of what the copy sent unless its copy was replaced since it was read (it belongs to an era that ended). */
        private boolean send(final int kind, final int nic, final byte[] rec, final int length, final long gen)
        {
            synchronized (CopyMirror.this)
            {
                if (gen != generation)
                {
                    return false;
                }
                synchronized (out)
                {
                    try
                    {
                        FramesCodec.write(out, kind, nic, rec, 0, length);
                        digestsSent++;
                        return true;
                    }
                    catch (final IOException ex)
                    {
                        failed(ex);
                        return false;
                    }
                }
            }
        }

        private void sleep()
        {
            try
            {
                Thread.sleep(20);
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
                closed = true;
            }
        }

        void close()
        {
            closed = true;
            Closeables.closeQuietly(socket);
            for (final Thread t : new Thread[]{reader, capture})
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
}
