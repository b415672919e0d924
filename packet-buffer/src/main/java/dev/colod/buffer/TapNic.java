package dev.colod.buffer;

import dev.colod.buffer.tap.TapDevice;
import io.netty.channel.IoEvent;
import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.epoll.EpollIoHandle;
import io.netty.channel.epoll.EpollIoOps;
import io.netty.channel.unix.FileDescriptor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Output commit for one NIC on two agent-owned TAP devices, driven by one Netty epoll event loop:
 * <ul>
 * <li>{@code guestTap} ("g") receives what the guest sends (steered there by tc from the VM's tap). Those
 * frames are held in the {@link EpochBuffer} while protected, and written to {@code uplinkTap} on release.</li>
 * <li>{@code uplinkTap} ("u") is a port of the host bridge. What the world sends to the guest arrives there and
 * is written to {@code guestTap} at once (tc steers it on to the VM's tap): inbound is never held.</li>
 * </ul>
 * All state is touched on the event loop only; other threads call the public methods, which hand over.
 */
public final class TapNic implements OutputCommitNic
{
    private static final Logger LOG = LoggerFactory.getLogger(TapNic.class);
    private static final int READ_BUDGET = 256;

    public enum Mode
    {
        PASS_THROUGH, HOLD, FENCED
    }

    private final String name;
    private final TapDevice guestTap;
    private final TapDevice uplinkTap;
    private final IoEventLoop loop;
    private final BufferLimits limits;
    private final EpochBuffer buffer;
    private final Runnable earlyCheckpoint;
    private final ByteBuffer inbound;
    private final EpochBuffer.FrameWriter toUplink;
    private IoRegistration guestReg;
    private IoRegistration uplinkReg;
    private boolean guestReadPaused;
    private volatile Mode mode = Mode.PASS_THROUGH;
    private volatile long passedFrames;
    private volatile long inboundFrames;
    private volatile long inboundBytes;
    private volatile long backpressureStalls;
    private volatile long inboundWriteErrors;

    public TapNic(final String name, final TapDevice guestTap, final TapDevice uplinkTap, final IoEventLoop loop,
        final BufferLimits limits, final Runnable earlyCheckpoint)
    {
        this.name = name;
        this.guestTap = guestTap;
        this.uplinkTap = uplinkTap;
        this.loop = loop;
        this.limits = limits;
        this.buffer = new EpochBuffer(limits);
        this.earlyCheckpoint = earlyCheckpoint;
        this.inbound = ByteBuffer.allocateDirect(limits.maxFrameBytes());
        final FileDescriptor up = uplinkTap.fd();
        this.toUplink = (arena, off, len) -> write(up, arena, off, len);
    }

    @Override
    public String name()
    {
        return name;
    }

    /** Register both taps with the event loop; frames pass through (unprotected) until {@link #hold()}. */
    public TapNic start() throws IOException
    {
        try
        {
            guestReg = loop.register(new Handle(guestTap.fd(), this::onGuestReadable)).get(5, TimeUnit.SECONDS);
            uplinkReg = loop.register(new Handle(uplinkTap.fd(), this::onUplinkReadable)).get(5, TimeUnit.SECONDS);
        }
        catch (final InterruptedException | ExecutionException | TimeoutException ex)
        {
            throw new IOException("registering taps of " + name + " with epoll failed: " + ex, ex);
        }
        guestReg.submit(EpollIoOps.EPOLLIN);
        uplinkReg.submit(EpollIoOps.EPOLLIN);
        return this;
    }

    private void onGuestReadable()
    {
        for (int n = 0; n < READ_BUDGET; n++)
        {
            final Mode m = mode;
            if (m != Mode.HOLD)
            {
                // unprotected or fenced: read through a scratch window at the start of the arena, which is
                // empty in these modes
                final ByteBuffer a = buffer.arena();
                final int len = read(guestTap.fd(), a, 0, buffer.window());
                if (len <= 0)
                {
                    return;
                }
                if (m == Mode.FENCED)
                {
                    buffer.countFenced();
                }
                else if (write(uplinkTap.fd(), a, 0, len))
                {
                    passedFrames++;
                }
                continue;
            }
            final int at = buffer.reserve();
            if (at < 0)
            {
                if (limits.policy() == BufferLimits.Policy.BACKPRESSURE)
                {
                    backpressureStalls++;
                    guestReadPaused = true;
                    // EPOLLERR only, not NONE: in Netty 4.2.18 submit(NONE) deletes the fd from epoll but
                    // keeps it marked as added, so the later submit(EPOLLIN) fails (epoll_ctl MOD: ENOENT)
                    guestReg.submit(EpollIoOps.EPOLLERR);
                    return;
                }
                // DROP: take the frame off the queue and count it
                final boolean frameLimit = buffer.atFrameLimit();
                final int len = read(guestTap.fd(), inbound, 0, inbound.capacity());
                if (len <= 0)
                {
                    return;
                }
                buffer.dropAtLimit(frameLimit);
                continue;
            }
            final int len = read(guestTap.fd(), buffer.arena(), at, at + buffer.window());
            if (len <= 0)
            {
                return;
            }
            if (buffer.append(at, len, System.nanoTime()))
            {
                earlyCheckpoint.run();
            }
        }
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
            if (write(guestTap.fd(), inbound, 0, len))
            {
                inboundFrames++;
                inboundBytes += len;
            }
            else
            {
                inboundWriteErrors++;
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

    // ---- called from the checkpoint engine's thread ----

    /** Hold from now on (protection started). Synchronous. */
    @Override
    public void hold()
    {
        runOnLoop(() -> mode = Mode.HOLD);
    }

    /**
     * Seal {@code epoch}. Synchronous: when this returns, every frame read so far is in that epoch, and
     * anything read later is in the next — required in speculative mode, where the VM resumes right after.
     */
    @Override
    public void seal(final long epoch)
    {
        runOnLoop(() -> buffer.seal(epoch));
    }

    /** Release {@code epoch}'s frames (asynchronous; releases stay in order because the loop runs tasks in order). */
    @Override
    public void release(final long epoch)
    {
        loop.execute(() ->
        {
            buffer.release(epoch, toUplink);
            resumeGuestReads();
        });
    }

    /** Protection lost: release everything and pass frames straight through from now on. Synchronous. */
    @Override
    public void releaseAllAndPass()
    {
        runOnLoop(() ->
        {
            buffer.releaseAll(toUplink);
            mode = Mode.PASS_THROUGH;
            resumeGuestReads();
        });
    }

    /** The secondary took the VM over: drop what is held, and everything after. Synchronous. */
    @Override
    public void fence()
    {
        runOnLoop(() ->
        {
            buffer.dropAll();
            mode = Mode.FENCED;
            resumeGuestReads();
        });
    }

    private void resumeGuestReads()
    {
        if (guestReadPaused)
        {
            guestReadPaused = false;
            guestReg.submit(EpollIoOps.EPOLLIN);
        }
    }

    private void runOnLoop(final Runnable r)
    {
        runOnLoop(loop, name, r);
    }

    /** Runs {@code r} on {@code loop} and waits for it (at most 10 s): the synchronous handover of both backends. */
    public static void runOnLoop(final IoEventLoop loop, final String name, final Runnable r)
    {
        if (loop.inEventLoop())
        {
            r.run();
            return;
        }
        try
        {
            loop.submit(r).get(10, TimeUnit.SECONDS);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while handing over to nic " + name, ex);
        }
        catch (final ExecutionException | TimeoutException ex)
        {
            throw new IllegalStateException("nic " + name + " event loop failed: " + ex, ex);
        }
    }

    @Override
    public NicStats stats()
    {
        return buffer.stats(name, mode.name().toLowerCase().replace('_', '-'), System.nanoTime(), passedFrames,
            inboundFrames, inboundBytes, backpressureStalls);
    }

    /** The buffer itself, for benchmarks and diagnostics on the loop thread. */
    EpochBuffer buffer()
    {
        return buffer;
    }

    public IoEventLoop loop()
    {
        return loop;
    }

    public Mode mode()
    {
        return mode;
    }

    @Override
    public void close()
    {
        if (!loop.isShuttingDown())
        {
            try
            {
                runOnLoop(() ->
                {
                    if (guestReg != null)
                    {
                        guestReg.cancel();
                    }
                    if (uplinkReg != null)
                    {
                        uplinkReg.cancel();
                    }
                });
            }
            catch (final RuntimeException ex)
            {
                LOG.warn("nic={} unregistering from epoll failed: {}", name, ex.toString());
            }
        }
        guestTap.close();
        uplinkTap.close();
    }

    /** Adapts a tap descriptor to Netty's epoll loop: readable means "call back". */
    private static final class Handle implements EpollIoHandle
    {
        private final FileDescriptor fd;
        private final Runnable onReadable;

        Handle(final FileDescriptor fd, final Runnable onReadable)
        {
            this.fd = fd;
            this.onReadable = onReadable;
        }

        @Override
        public FileDescriptor fd()
        {
            return fd;
        }

        @Override
        public void handle(final IoRegistration registration, final IoEvent event)
        {
            onReadable.run();
        }

        @Override
        public void close()
        {
            // the TapDevice owns the descriptor
        }
    }
}
