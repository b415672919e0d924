package dev.colod.core.protocol;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * Reads and writes the seven checkpoint messages on one byte stream (the control channel, after the
 * preamble). Blocking; deadlines are enforced from outside by closing the stream (see {@code Watchdog}).
 * Every message is traced at debug level with the checkpoint it belongs to.
 * <p>
 * Not thread-safe: one session thread owns it.
 */
public final class ColoChannel
{
    private static final Logger LOG = LoggerFactory.getLogger(ColoChannel.class);

    private final InputStream in;
    private final OutputStream out;
    private final String peer;
    private final ProtocolTap tap;
    private final byte[] scratch = new byte[8];
    private long checkpointId;

    public ColoChannel(final InputStream in, final OutputStream out, final String peer, final ProtocolTap tap)
    {
        this.in = in;
        this.out = out;
        this.peer = peer;
        this.tap = tap;
    }

    public String peer()
    {
        return peer;
    }

    /** The checkpoint id that traces and errors refer to; advanced by the engine per transaction. */
    public void checkpointId(final long checkpointId)
    {
        this.checkpointId = checkpointId;
    }

    public void put(final ColoCommand command) throws IOException
    {
        tap.beforeSend(command, checkpointId);
        writeInt(command.id());
        out.flush();
        LOG.debug("peer={} checkpoint={} send {}", peer, checkpointId, command.wireName());
    }

    /** {@code vmstate-size} followed by its be64 byte count; the caller then writes exactly that many bytes. */
    public void putStateSize(final long sizeBytes) throws IOException
    {
        tap.beforeSend(ColoCommand.VMSTATE_SIZE, checkpointId);
        writeInt(ColoCommand.VMSTATE_SIZE.id());
        writeLong(sizeBytes);
        LOG.debug("peer={} checkpoint={} send vmstate-size {}", peer, checkpointId, sizeBytes);
    }

    public ColoCommand get() throws IOException
    {
        final ColoCommand command = ColoCommand.fromWire(readInt());
        LOG.debug("peer={} checkpoint={} recv {}", peer, checkpointId, command.wireName());
        tap.afterReceive(command, checkpointId);
        return command;
    }

    public void expect(final ColoCommand expected) throws IOException
    {
        final ColoCommand received = get();
        if (received != expected)
        {
            throw ProtocolException.unexpected(received, expected);
        }
    }

    /**
     * Expects {@code vmstate-size} and returns its byte count, refusing a count above {@code limitBytes}
     * (unsigned, so a "negative" be64 is refused too) before anyone allocates for it.
     */
    public long expectStateSize(final long limitBytes) throws IOException
    {
        expect(ColoCommand.VMSTATE_SIZE);
        final long size = readLong();
        if (Long.compareUnsigned(size, limitBytes) > 0)
        {
            throw ProtocolException.stateTooLarge(size, limitBytes, checkpointId);
        }
        LOG.debug("peer={} checkpoint={} recv vmstate-size {}", peer, checkpointId, size);
        return size;
    }

    public OutputStream out()
    {
        return out;
    }

    public InputStream in()
    {
        return in;
    }

    public ProtocolTap tap()
    {
        return tap;
    }

    private void writeInt(final int v) throws IOException
    {
        scratch[0] = (byte)(v >>> 24);
        scratch[1] = (byte)(v >>> 16);
        scratch[2] = (byte)(v >>> 8);
        scratch[3] = (byte)v;
        out.write(scratch, 0, 4);
    }

    private void writeLong(final long v) throws IOException
    {
        writeInt((int)(v >>> 32));
        writeInt((int)v);
    }

    private int readInt() throws IOException
    {
        readFully(in, scratch, 0, 4, "command");
        return ((scratch[0] & 0xff) << 24) | ((scratch[1] & 0xff) << 16) | ((scratch[2] & 0xff) << 8) |
            (scratch[3] & 0xff);
    }

    private long readLong() throws IOException
    {
        readFully(in, scratch, 0, 8, "vmstate-size");
        long v = 0;
        for (int i = 0; i < 8; i++)
        {
            v = (v << 8) | (scratch[i] & 0xff);
        }
        return v;
    }

    public static void readFully(final InputStream in, final byte[] b, final int off, final int len, final String what)
        throws IOException
    {
        int n = 0;
        while (n < len)
        {
            final int r = in.read(b, off + n, len - n);
            if (r < 0)
            {
                throw new EOFException("connection closed by peer while reading " + what + " (" + n + " of " + len +
                    " bytes)");
            }
            n += r;
        }
    }
}
