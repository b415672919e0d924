package dev.colod.buffer.xdp;

import dev.colod.buffer.Backend;
import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.FrameLedger;
import io.netty.channel.IoRegistration;
import io.netty.channel.unix.FileDescriptor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.util.function.LongConsumer;

/**
 * Output commit in AF_XDP rings ({@code buffer: xdp}): the guest's frames are redirected by {@link XdpPlumbing}'s
 * hold program into an AF_XDP socket whose UMEM is the epoch buffer. Holding a frame is keeping its UMEM address
 * (no system call, no copy by this process); releasing an epoch puts those addresses into the TX ring of a second
 * socket on the uplink veth, sharing the UMEM, and kicks the kernel (one {@code sendto} per batch the kernel takes,
 * 32 frames in copy mode); sent chunks come back on the completion ring and go to the fill ring again. Dropping
 * a frame is giving its chunk back. Inbound frames never come here (the kernel redirects them to the VM's tap).
 * <p>
 * Limits: at most {@code max-frames} and {@code max-bytes} held; the {@code drop} policy drops what arrives beyond
 * them, {@code backpressure} leaves frames in the RX ring (the kernel drops once that is full, counted in
 * {@link #kernelDrops}). Runs on the ledger's loop, woken by epoll on the socket.
 */
public final class XdpBackend implements Backend
{
    private static final Logger LOG = LoggerFactory.getLogger(XdpBackend.class);
    static final int CHUNK = 2048;
    static final int RING = 2048;
    private static final long STUCK_NS = 100_000_000L;

    private final FrameLedger ledger;
    private final String name;
    private final XdpPlumbing plumbing;
    private final BufferLimits.Policy policy;
    private final int maxFrames;
    private final long maxBytes;
    private final XskSocket.Umem umem;
    private final XskSocket guest;
    private final XskSocket uplink;
    private final long[] free;
    private int freeCount;
    private final long[] heldAddr;
    private final int[] heldLen;
    private long heldHead;
    private long heldTail;
    private long heldBytes;
    private boolean stalled;
    private boolean kickPending;
    private volatile long wakeups;
    private volatile long taken;
    private static final long HOLD_POLL_NS = 1_000_000L;
    private final Runnable pollWhileHolding = this::pollHolding;
    private boolean polling;
    private boolean closed;
    private final IoRegistration reg;
    private final XskSocket.FrameSink onFrame = this::frame;
    private final LongConsumer recycle = this::recycle;

    private XdpBackend(final FrameLedger ledger, final XdpPlumbing plumbing) throws IOException
    {
        this.ledger = ledger;
        this.name = ledger.name();
        this.plumbing = plumbing;
        this.policy = ledger.limits().policy();
        this.maxFrames = ledger.limits().maxFrames();
        this.maxBytes = ledger.limits().maxBytes();
        final int chunks = maxFrames + 2 * RING;
        this.umem = new XskSocket.Umem(chunks, CHUNK);
        XskSocket g = null;
        XskSocket u = null;
        try
        {
            final XskSocket gs = XdpPlumbing.in(plumbing.netns, () -> XskSocket.open(umem, plumbing.vmTapIfindex, 0, RING,
                plumbing.vmTap));
            g = gs;
            u = XdpPlumbing.in(plumbing.netns, () -> XskSocket.sharing(gs, plumbing.uplinkIfindex, 0, RING, plumbing.uplink));
        }
        catch (final IOException | RuntimeException ex)
        {
            if (g != null)
            {
                g.close();
            }
            umem.close();
            throw ex;
        }
        this.guest = g;
        this.uplink = u;
        try
        {
            // room for every chunk of the UMEM in flight at once: a release is never refused for want of it
            uplink.sendBuffer((int)Math.min(Integer.MAX_VALUE / 2, (long)chunks * 4096));
        }
        catch (final IOException ex)
        {
            closeSockets();
            throw ex;
        }
        this.free = new long[chunks];
        for (int i = 0; i < chunks; i++)
        {
            free[i] = (long)i * CHUNK;
        }
        this.freeCount = chunks;
        this.heldAddr = new long[maxFrames];
        this.heldLen = new int[maxFrames];
        refill();
        IoRegistration r = null;
        try
        {
            Bpf.mapUpdate(plumbing.xskMap, 0, guest.fd());
            r = ledger.loop().register(new FileDescriptor(guest.fd()), this::onReadable);
        }
        finally
        {
            if (r == null)
            {
                closeSockets();
            }
        }
        this.reg = r;
        ledger.loop().post(this::onReadable); // frames that came before the registration
    }

    /** A backend on {@code plumbing}'s XDP data path; frames pass through (unprotected) until the ledger holds. */
    public static Backend.Factory on(final XdpPlumbing plumbing)
    {
        return ledger -> new XdpBackend(ledger, plumbing);
    }

    private void refill()
    {
        final int n = Math.min(freeCount, RING);
        if (n > 0)
        {
            final int given = guest.fill(free, freeCount - n, n);
            freeCount -= given;
        }
    }

    private void recycle(final long addr)
    {
        free[freeCount++] = addr;
    }

    /**
     * epoll says frames are in the RX ring. While holding, nothing needs them before the next seal, so the socket
     * leaves epoll and a timer takes them every {@value #HOLD_POLL_NS} ns instead: no system call per frame, one
     * timer per millisecond. Passing through, every wake-up is served at once.
     */
    private void onReadable()
    {
        wakeups++;
        take();
        if (ledger.mode() == FrameLedger.Mode.HOLD && polling == false && !closed)
        {
            polling = true;
            reg.submit(io.netty.channel.epoll.EpollIoOps.EPOLLERR); // EPOLLIN off (EPOLLERR: see TapBackend)
            ledger.loop().schedule(pollWhileHolding, HOLD_POLL_NS);
        }
    }

    private void pollHolding()
    {
        if (closed)
        {
            return;
        }
        take();
        if (ledger.mode() == FrameLedger.Mode.HOLD)
        {
            ledger.loop().schedule(pollWhileHolding, HOLD_POLL_NS);
            return;
        }
        polling = false;
        reg.submit(io.netty.channel.epoll.EpollIoOps.EPOLLIN);
        take(); // what came between the last look and epoll's return
    }

    /** Takes what the RX ring holds (unless backpressure stalled it), refills, and sends what passes. */
    private void take()
    {
        uplink.completed(recycle);
        if (stalled)
        {
            return;
        }
        while (true)
        {
            int max = Integer.MAX_VALUE;
            if (policy == BufferLimits.Policy.BACKPRESSURE && ledger.mode() == FrameLedger.Mode.HOLD)
            {
                max = maxFrames - (int)(heldTail - heldHead);
                if (max <= 0)
                {
                    stalled = true;
                    ledger.stalled();
                    break;
                }
            }
            final int n = guest.receive(max, onFrame);
            refill();
            if (n == 0)
            {
                break;
            }
        }
        flushPassed();
    }

    private void frame(final long addr, final int len)
    {
        taken++;
        switch (ledger.mode())
        {
            case HOLD:
                if (heldTail - heldHead >= maxFrames)
                {
                    recycle(addr);
                    ledger.dropped(FrameLedger.Drop.LIMIT_FRAMES);
                }
                else if (heldBytes + len > maxBytes)
                {
                    recycle(addr);
                    ledger.dropped(FrameLedger.Drop.LIMIT_BYTES);
                }
                else
                {
                    final int i = (int)(heldTail % maxFrames);
                    heldAddr[i] = addr;
                    heldLen[i] = len;
                    heldTail++;
                    heldBytes += len;
                    ledger.held(len, System.nanoTime());
                }
                break;
            case PASS_THROUGH:
                if (send(addr, len))
                {
                    ledger.passed();
                }
                else
                {
                    recycle(addr);
                    ledger.dropped(FrameLedger.Drop.WRITE_ERROR);
                }
                break;
            default:
                recycle(addr);
                ledger.dropped(FrameLedger.Drop.FENCED);
        }
    }

    /** Queues one frame on the uplink, making room first if the TX ring is full; false if the kernel takes none. */
    private boolean send(final long addr, final int len)
    {
        if (!uplink.queue(addr, len))
        {
            kick();
            if (!uplink.queue(addr, len))
            {
                return false;
            }
        }
        kickPending = true;
        return true;
    }

    private void flushPassed()
    {
        if (kickPending)
        {
            kick();
        }
    }

    /** Asks the kernel to send what is queued until it took all of it (copy mode takes 32 per call). */
    private void kick()
    {
        kickPending = false;
        try
        {
            long stuckSince = 0;
            while (true)
            {
                final int before = uplink.txPending();
                uplink.kick();
                uplink.completed(recycle);
                final int left = uplink.txPending();
                if (left == 0)
                {
                    break;
                }
                if (left < before)
                {
                    stuckSince = 0;
                    continue;
                }
                // the kernel took nothing: frames still in flight downstream hold its budget; wait for them a while
                final long now = System.nanoTime();
                if (stuckSince == 0)
                {
                    stuckSince = now;
                }
                else if (now - stuckSince > STUCK_NS)
                {
                    LOG.warn("nic={} the kernel took no frame from {}'s TX ring for {} ms ({} waiting)", name,
                        plumbing.uplink, STUCK_NS / 1_000_000, left);
                    break;
                }
                Thread.yield();
            }
        }
        catch (final IOException ex)
        {
            LOG.warn("nic={} sending on {} failed: {}", name, plumbing.uplink, ex.toString());
        }
    }

    @Override
    public long mark()
    {
        take(); // frames the kernel already delivered belong to the epoch being sealed
        return heldTail;
    }

    /**
     * Sends every held frame up to {@code mark}, in order. Returns the frames the kernel would not take from the
     * TX ring (given back, never re-sent out of order); descriptors it later finds invalid are its own count, in
     * {@link #kernelDrops}.
     */
    @Override
    public int letGo(final long mark)
    {
        while (heldHead < mark)
        {
            final int i = (int)(heldHead % maxFrames);
            if (!send(heldAddr[i], heldLen[i]))
            {
                break;
            }
            heldBytes -= heldLen[i];
            heldHead++;
        }
        flushPassed();
        final int refused = (int)(mark - heldHead);
        drop(mark);
        return refused;
    }

    /** Gives the chunks of every held frame up to {@code mark} back; none of them leaves. */
    @Override
    public void drop(final long mark)
    {
        while (heldHead < mark)
        {
            final int i = (int)(heldHead % maxFrames);
            recycle(heldAddr[i]);
            heldBytes -= heldLen[i];
            heldHead++;
        }
        unstall();
    }

    private void unstall()
    {
        refill();
        if (stalled)
        {
            stalled = false;
            ledger.loop().post(this::take); // frames waiting in the RX ring: epoll will not say so again
        }
    }

    /** Frames the kernel dropped on the way in (RX ring full, no free chunk, too long) and TX descriptors it refused. */
    @Override
    public KernelDrops kernelDrops()
    {
        try
        {
            final long[] s = guest.statistics();
            final long[] t = uplink.statistics();
            return new KernelDrops(s[0] + s[3] + s[4], s[1] + t[2]);
        }
        catch (final IOException ex)
        {
            return KernelDrops.NONE;
        }
    }

    /** What the inbound program counted: every frame the kernel redirected to the guest. */
    @Override
    public KernelInbound kernelInbound()
    {
        try
        {
            final long[] c = plumbing.inbound();
            return new KernelInbound(c[0], c[1]);
        }
        catch (final IOException ex)
        {
            return KernelInbound.NONE;
        }
    }

    /** System calls made to send (kicks), for the benchmark's "system calls per frame". */
    public long kicks()
    {
        return uplink.kicks;
    }

    /** Frames taken off the RX ring (held, passed or dropped), for benchmarks. */
    public long framesTaken()
    {
        return taken;
    }

    /** Times the loop woke for the socket (each an epoll_wait return; frames are then taken without calls). */
    public long wakeups()
    {
        return wakeups;
    }

    /** Starts {@link #kicks} and {@link #wakeups} from 0 (benchmarks; the counts are read racily). */
    public void resetCallCounts()
    {
        ledger.loop().call(() ->
        {
            uplink.kicks = 0;
            wakeups = 0;
        });
    }

    @Override
    public void close()
    {
        try
        {
            ledger.loop().call(() -> closed = true);
        }
        catch (final RuntimeException ex)
        {
            closed = true; // the loop is gone: nothing of ours runs on it any more
        }
        ledger.loop().cancel(reg);
        closeSockets();
    }

    private void closeSockets()
    {
        uplink.close();
        guest.close(); // the kernel takes it out of the XSKMAP: the hold program drops from now on
        umem.close();
    }
}
