package dev.colod.core;

import dev.colod.core.protocol.HeartbeatFrame;
import dev.colod.core.protocol.ProtocolException;
import dev.colod.core.status.ColoCounters;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.LongSupplier;

/**
 * Both ends of the heartbeat channel of one session: sends a BEAT every interval and watches for the peer's.
 * No frame within the timeout, or the connection closing without a BYE, means the peer is lost; a BYE means
 * the peer ends the session on purpose. Either is recorded once as the session's end (first writer wins),
 * then {@code onEnd} runs (it cuts the control connection so the session thread stops waiting).
 */
final class Heartbeat implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(Heartbeat.class);

    private final Socket socket;
    private final String peer;
    private final int intervalMs;
    private final int timeoutMs;
    private final LongSupplier lastCompleted;
    private final ColoCounters counters;
    private final SessionEnd end;
    private final Runnable onEnd;
    private final AtomicBoolean ended = new AtomicBoolean();
    private final Object writeLock = new Object();
    private final Thread sender;
    private final Thread receiver;

    Heartbeat(final Socket socket, final String peer, final String name, final int intervalMs, final int timeoutMs,
        final LongSupplier lastCompleted, final ColoCounters counters, final SessionEnd end, final Runnable onEnd)
    {
        this.socket = socket;
        this.peer = peer;
        this.intervalMs = intervalMs;
        this.timeoutMs = timeoutMs;
        this.lastCompleted = lastCompleted;
        this.counters = counters;
        this.end = end;
        this.onEnd = onEnd;
        this.sender = new Thread(this::sendLoop, name + "-hb-send");
        this.receiver = new Thread(this::receiveLoop, name + "-hb-recv");
        sender.setDaemon(true);
        receiver.setDaemon(true);
    }

    void start()
    {
        sender.start();
        receiver.start();
    }

    /** End the session on purpose: tell the peer why ({@code text}: this side's own account), then close. Safe to call more than once. */
    void bye(final int reason, final String text)
    {
        if (ended.compareAndSet(false, true))
        {
            synchronized (writeLock)
            {
                try
                {
                    HeartbeatFrame.bye(reason, text).writeTo(socket.getOutputStream());
                }
                catch (final IOException ex)
                {
                    LOG.debug("peer={} could not send heartbeat bye: {}", peer, ex.toString());
                }
            }
        }
        closeSocket();
    }

    private void sendLoop()
    {
        final byte[] frame = new byte[HeartbeatFrame.SIZE];
        try
        {
            final OutputStream out = socket.getOutputStream();
            while (!ended.get())
            {
                new HeartbeatFrame(HeartbeatFrame.BEAT, 0, lastCompleted.getAsLong()).encode(frame);
                synchronized (writeLock)
                {
                    if (ended.get())
                    {
                        break;
                    }
                    out.write(frame);
                    out.flush();
                }
                counters.heartbeatsSent.incrementAndGet();
                Thread.sleep(intervalMs);
            }
        }
        catch (final IOException ex)
        {
            // the receiver sees the same broken connection and decides whether the peer is lost
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
    }

    private void receiveLoop()
    {
        final byte[] buf = new byte[HeartbeatFrame.SIZE];
        try
        {
            socket.setSoTimeout(timeoutMs);
            final InputStream in = socket.getInputStream();
            while (true)
            {
                final HeartbeatFrame f = HeartbeatFrame.readFrom(in, buf);
                if (f.type() == HeartbeatFrame.BYE)
                {
                    LOG.info("peer={} said goodbye (reason {}): {}", peer, f.arg(), f.text().isEmpty() ? "-" : f.text());
                    ended.set(true);
                    end.recordBye(f.arg(), f.text());
                    closeSocket();
                    onEnd.run();
                    return;
                }
                counters.heartbeatsReceived.incrementAndGet();
            }
        }
        catch (final SocketTimeoutException ex)
        {
            lost(SessionEnd.Cause.PEER_LOST, "no heartbeat from " + peer + " for " + timeoutMs + " ms");
        }
        catch (final ProtocolException ex)
        {
            // a live peer sent a frame the protocol does not allow: the session ends (PROTOCOL.md, section 5), it
            // is not the loss of the peer; the engine says BYE 1 (error) and a secondary stands by
            if (!ended.get())
            {
                LOG.warn("peer={} heartbeat protocol error: {}", peer, ex.getMessage());
                end.record(SessionEnd.Cause.PROTOCOL_ERROR, "heartbeat channel: " + ex.getMessage(), ex);
                onEnd.run();
            }
        }
        catch (final IOException ex)
        {
            // the peer's kernel closed or reset the connection: its host is up, its process is gone
            lost(SessionEnd.Cause.PEER_CLOSED, "heartbeat channel to " + peer + " failed: " + ex.getMessage());
        }
    }

    private void lost(final SessionEnd.Cause cause, final String detail)
    {
        if (ended.compareAndSet(false, true))
        {
            counters.heartbeatLosses.incrementAndGet();
            LOG.warn("peer={} lost: {}", peer, detail);
            end.record(cause, detail);
            onEnd.run(); // first: the reaction to a lost peer must not wait for this socket's close
            closeSocket();
        }
    }

    private void closeSocket()
    {
        abort(socket);
    }

    /**
     * Closes {@code s} without waiting for its peer. Closing a TLS socket reads what the peer still sends (JSSE
     * drains its input, up to SO_TIMEOUT): with a silent peer that is a whole timeout. A 1 ms timeout first
     * bounds that drain.
     */
    static void abort(final Socket s)
    {
        if (s == null)
        {
            return;
        }
        try
        {
            if (!s.isClosed())
            {
                s.setSoTimeout(1);
            }
        }
        catch (final IOException ignore)
        {
            // closing anyway
        }
        try
        {
            s.close();
        }
        catch (final IOException ignore)
        {
            // already closed
        }
    }

    @Override
    public void close()
    {
        ended.set(true);
        closeSocket();
        sender.interrupt();
    }
}
