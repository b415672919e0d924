package dev.colod.buffer.tap;

import dev.colod.buffer.Backend;
import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.FrameLedger;
import dev.colod.buffer.tap.TapDevice;
import io.netty.channel.IoRegistration;
import io.netty.channel.epoll.EpollIoOps;
import io.netty.channel.unix.FileDescriptor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.function.LongSupplier;

/**
 * Output commit on two agent-owned TAP devices: frames held in this process.
 * <ul>
 * <li>{@code guestTap} ("g") receives what the guest sends (steered there by tc from the VM's tap). Held frames
 * are read into the {@link EpochBuffer} and written to {@code uplinkTap} when the ledger lets them go.</li>
 * <li>{@code uplinkTap} ("u") is a port of the host bridge. What the world sends to the guest arrives there and
 * is written to {@code guestTap} at once (tc steers it on to the VM's tap): inbound is never held.</li>
 * </ul>
 * Runs on the ledger's loop: one system call per frame read and per frame written.
 */
public final class TapBackend implements Backend
{
    private static final Logger LOG = LoggerFactory.getLogger(TapBackend.class);
    private static final int READ_BUDGET = 256;
    /** Rounds of {@link #READ_BUDGET} frames a seal reads at most from the guest tap's queue. */
    private static final int DRAIN_ROUNDS = 8;

    private final FrameLedger ledger;
    private final String name;
    private final TapDevice guestTap;
    private final TapDevice uplinkTap;
    private final BufferLimits.Policy policy;
    private final EpochBuffer buffer;
    private final ByteBuffer inbound;
    /** Where a frame cut from a held one is written out from (hybrid mode; allocated at the first cut). */
    private ByteBuffer cut;
    private final EpochBuffer.FrameWriter toUplink;
    private final IoRegistration guestReg;
    private final IoRegistration uplinkReg;
    private final LongSupplier notDelivered;
    private volatile long notDeliveredSeen;
    private volatile long notDeliveredReadNs;
    private boolean guestReadPaused;

    private TapBackend(final FrameLedger ledger, final TapDevice guestTap, final TapDevice uplinkTap,
        final LongSupplier notDelivered) throws IOException
    {
        this.ledger = ledger;
        this.notDelivered = notDelivered;
        this.name = ledger.name();
        this.guestTap = guestTap;
        this.uplinkTap = uplinkTap;
        this.policy = ledger.limits().policy();
        this.buffer = new EpochBuffer(ledger.limits());
        this.inbound = ByteBuffer.allocateDirect(ledger.limits().maxFrameBytes());
        final FileDescriptor up = uplinkTap.fd();
        this.toUplink = (arena, off, len) -> write(up, arena, off, len);
        this.guestReg = ledger.loop().register(guestTap.fd(), this::onGuestReadable);
        IoRegistration u = null;
        try
        {
            u = ledger.loop().register(uplinkTap.fd(), this::onUplinkReadable);
        }
        finally
        {
            if (u == null)
            {
                ledger.loop().cancel(guestReg);
            }
        }
        this.uplinkReg = u;
    }

    /** A backend on the two agent taps; frames pass through (unprotected) until the ledger holds. */
    public static Backend.Factory on(final TapDevice guestTap, final TapDevice uplinkTap)
    {
        return on(guestTap, uplinkTap, () -> 0);
    }

    /**
     * As above; {@code notDelivered} says how many guest frames the kernel could not put into {@code guestTap}
     * (its queue was full: this agent did not read fast enough), read at most once a second for the stats.
     */
    public static Backend.Factory on(final TapDevice guestTap, final TapDevice uplinkTap,
        final LongSupplier notDelivered)
    {
        return ledger -> new TapBackend(ledger, guestTap, uplinkTap, notDelivered);
    }

    /** Guest frames the kernel dropped before this backend could read them: the guest tap's queue was full. */
    @Override
    public KernelDrops kernelDrops()
    {
        final long now = System.nanoTime();
        if (now - notDeliveredReadNs > 1_000_000_000L || notDeliveredReadNs == 0)
        {
            notDeliveredSeen = notDelivered.getAsLong();
            notDeliveredReadNs = now;
        }
        return new KernelDrops(notDeliveredSeen, 0);
    }

    private void onGuestReadable()
    {
        readGuest();
    }

    /** Reads up to {@link #READ_BUDGET} guest frames; true if the budget ran out with frames perhaps left. */
    private boolean readGuest()
    {
        for (int n = 0; n < READ_BUDGET; n++)
        {
            final FrameLedger.Mode m = ledger.mode();
            if (m != FrameLedger.Mode.HOLD)
            {
                // unprotected or fenced: nothing is held, so the start of the arena is free as a scratch window
                final ByteBuffer a = buffer.arena();
                final int len = read(guestTap.fd(), a, 0, buffer.window());
                if (len <= 0)
                {
                    return false;
                }
                ledger.rewriteOutbound(a, 0, len);
                if (m == FrameLedger.Mode.FENCED)
                {
                    ledger.dropped(FrameLedger.Drop.FENCED);
                }
                else if (write(uplinkTap.fd(), a, 0, len))
                {
                    ledger.passed();
                }
                else
                {
                    ledger.dropped(FrameLedger.Drop.WRITE_ERROR);
                }
                continue;
            }
            final int at = buffer.reserve();
            if (at < 0)
            {
                if (policy == BufferLimits.Policy.BACKPRESSURE)
                {
                    ledger.stalled();
                    guestReadPaused = true;
                    // EPOLLERR only, not NONE: in Netty 4.2.18 submit(NONE) deletes the fd from epoll but
                    // keeps it marked as added, so the later submit(EPOLLIN) fails (epoll_ctl MOD: ENOENT)
                    guestReg.submit(EpollIoOps.EPOLLERR);
                    return false;
                }
                // DROP: take the frame off the queue and count it
                final boolean frameLimit = buffer.atFrameLimit();
                if (read(guestTap.fd(), inbound, 0, inbound.capacity()) <= 0)
                {
                    return false;
                }
                ledger.dropped(frameLimit ? FrameLedger.Drop.LIMIT_FRAMES : FrameLedger.Drop.LIMIT_BYTES);
                continue;
            }
            final int len = read(guestTap.fd(), buffer.arena(), at, at + buffer.window());
            if (len <= 0)
            {
                return false;
            }
            if (len >= buffer.window())
            {
                ledger.dropped(FrameLedger.Drop.OVERSIZE);
                continue;
            }
            ledger.rewriteOutbound(buffer.arena(), at, len);
            if (buffer.append(at, len))
            {
                ledger.heldFrame(buffer.arena(), at, len, buffer.tail(), System.nanoTime());
            }
            else
            {
                ledger.dropped(FrameLedger.Drop.LIMIT_BYTES);
            }
        }
        return true;
    }

    private void onUplinkReadable()
    {
        for (int n = 0; n < READ_BUDGET; n++)
        {
            final int len = read(uplinkTap.fd(), inbound, 0, inbound.capacity());
            if (len <= 0)
            {
                return;
            }
            ledger.rewriteInbound(inbound, 0, len);
            if (write(guestTap.fd(), inbound, 0, len))
            {
                ledger.inboundFrame(inbound, 0, len);
            }
            else
            {
                ledger.dropped(FrameLedger.Drop.WRITE_ERROR);
            }
        }
    }

    private int read(final FileDescriptor fd, final ByteBuffer buf, final int pos, final int limit)
    {
        try
        {
            return fd.read(buf, pos, limit);
        }
        catch (final IOException ex)
        {
            LOG.error("nic={} read from {} failed: {}", name, fd, ex.toString());
            return -1;
        }
    }

    private boolean write(final FileDescriptor fd, final ByteBuffer buf, final int off, final int len)
    {
        try
        {
            return fd.write(buf, off, off + len) == len;
        }
        catch (final IOException ex)
        {
            LOG.warn("nic={} write of a {}-byte frame to {} failed: {}", name, len, fd, ex.toString());
            return false;
        }
    }

    @Override
    public long mark()
    {
        // The VM is paused: what its guest sent before the pause may still wait in the guest tap's queue (QEMU wrote
        // it, the loop has not read it yet). It belongs to the epoch the checkpoint covers: take it in now, or it
        // would wait a checkpoint longer and, in hybrid mode, be compared against the next copy, which never sends
        // it (its state already has it sent).
        int rounds = 0;
        while (rounds++ < DRAIN_ROUNDS && !guestReadPaused && readGuest())
        {
            // budget ran out with frames perhaps left: another round
        }
        return buffer.tail();
    }

    @Override
    public int letGo(final long mark)
    {
        final int refused = buffer.writeUpTo(mark, toUplink);
        resumeGuestReads();
        return refused;
    }

    @Override
    public int letGoOne(final long seq)
    {
        final int refused = buffer.writeOne(seq, toUplink) ? 0 : 1;
        resumeGuestReads();
        return refused;
    }

    @Override
    public int letGoSplit(final long seq, final byte[] first, final byte[] rest)
    {
        buffer.replace(seq, rest);
        if (cut == null)
        {
            cut = ByteBuffer.allocateDirect(buffer.window());
        }
        cut.put(0, first);
        return toUplink.write(cut, 0, first.length) ? 0 : 1;
    }

    @Override
    public void drop(final long mark)
    {
        buffer.dropUpTo(mark);
        resumeGuestReads();
    }

    private void resumeGuestReads()
    {
        if (guestReadPaused)
        {
            guestReadPaused = false;
            guestReg.submit(EpollIoOps.EPOLLIN);
        }
    }

    @Override
    public void close()
    {
        ledger.loop().cancel(guestReg, uplinkReg);
        guestTap.close();
        uplinkTap.close();
    }
}
