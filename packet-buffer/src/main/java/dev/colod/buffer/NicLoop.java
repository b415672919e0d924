package dev.colod.buffer;

import io.netty.channel.IoEvent;
import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.epoll.EpollIoHandle;
import io.netty.channel.epoll.EpollIoOps;
import io.netty.channel.unix.FileDescriptor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The one thread that owns a NIC's output commit: a Netty epoll event loop. Its ledger and backend state are
 * touched there only; other threads hand work over with {@link #call} (waits) or {@link #post} (keeps order,
 * does not wait), and backends register their descriptors with {@link #register}.
 */
public final class NicLoop
{
    private static final Logger LOG = LoggerFactory.getLogger(NicLoop.class);
    private static final long HANDOVER_TIMEOUT_MS = 10_000;

    private final IoEventLoop loop;
    private final String nic;

    public NicLoop(final IoEventLoop loop, final String nic)
    {
        this.loop = loop;
        this.nic = nic;
    }

    /** Runs {@code r} on the loop and waits for it (at most 10 s); runs it at once when called on the loop. */
    public void call(final Runnable r)
    {
        if (loop.inEventLoop())
        {
            r.run();
            return;
        }
        try
        {
            loop.submit(r).get(HANDOVER_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while handing over to nic " + nic, ex);
        }
        catch (final ExecutionException | TimeoutException ex)
        {
            throw new IllegalStateException("nic " + nic + " event loop failed: " + ex, ex);
        }
    }

    /** Runs {@code r} on the loop later; tasks run in the order they were posted. */
    public void post(final Runnable r)
    {
        loop.execute(r);
    }

    /** Runs {@code r} on the loop after {@code delayNs}. */
    public void schedule(final Runnable r, final long delayNs)
    {
        if (!loop.isShuttingDown())
        {
            loop.schedule(r, delayNs, TimeUnit.NANOSECONDS);
        }
    }

    public boolean isShuttingDown()
    {
        return loop.isShuttingDown();
    }

    /** Registers {@code fd} for EPOLLIN: {@code onReadable} runs on the loop whenever it is readable. */
    public IoRegistration register(final FileDescriptor fd, final Runnable onReadable) throws IOException
    {
        final IoRegistration reg;
        try
        {
            reg = loop.register(new Handle(fd, onReadable)).get(5, TimeUnit.SECONDS);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            throw new IOException("registering " + fd + " of nic " + nic + " with epoll was interrupted", ex);
        }
        catch (final ExecutionException | TimeoutException ex)
        {
            throw new IOException("registering " + fd + " of nic " + nic + " with epoll failed: " + ex, ex);
        }
        reg.submit(EpollIoOps.EPOLLIN);
        return reg;
    }

    /** Cancels registrations on the loop; a loop already shutting down has dropped them. Never throws. */
    public void cancel(final IoRegistration... registrations)
    {
        if (loop.isShuttingDown())
        {
            return;
        }
        try
        {
            call(() ->
            {
                for (final IoRegistration r : registrations)
                {
                    if (r != null)
                    {
                        r.cancel();
                    }
                }
            });
        }
        catch (final RuntimeException ex)
        {
            LOG.warn("nic={} unregistering from epoll failed: {}", nic, ex.toString());
        }
    }

    /** Adapts a descriptor to Netty's epoll loop: readable means "call back". */
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
            // the backend owns the descriptor
        }
    }
}
