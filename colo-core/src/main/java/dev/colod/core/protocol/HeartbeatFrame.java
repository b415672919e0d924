package dev.colod.core.protocol;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * One frame on the heartbeat channel, 16 bytes, both directions (docs/PROTOCOL.md, "Heartbeats").
 * <pre>
 *  off size field
 *   0   4   type: 1 BEAT, 2 BYE
 *   4   4   BEAT: 0; BYE: reason (0 stop, 1 error, 2 failover requested)
 *   8   8   BEAT: sender's last completed checkpoint id; BYE: 0
 * </pre>
 * A BYE says the session ends on purpose: the receiver must not treat the closing connection as the loss
 * of its peer (and the secondary must not fail over).
 */
public record HeartbeatFrame(int type, int arg, long value)
{
    public static final int SIZE = 16;
    public static final int BEAT = 1;
    public static final int BYE = 2;
    public static final int BYE_STOP = 0;
    public static final int BYE_ERROR = 1;
    public static final int BYE_FAILOVER = 2;
    /** From the primary: its VM is gone (QEMU exited); the secondary resumes it from the last committed checkpoint. */
    public static final int BYE_VM_LOST = 3;

    public void encode(final byte[] b)
    {
        putInt(b, 0, type);
        putInt(b, 4, arg);
        putInt(b, 8, (int)(value >>> 32));
        putInt(b, 12, (int)value);
    }

    public void writeTo(final OutputStream out) throws IOException
    {
        final byte[] b = new byte[SIZE];
        encode(b);
        out.write(b);
        out.flush();
    }

    public static HeartbeatFrame readFrom(final InputStream in, final byte[] buf) throws IOException
    {
        ColoChannel.readFully(in, buf, 0, SIZE, "heartbeat");
        final int type = getInt(buf, 0);
        if (type != BEAT && type != BYE)
        {
            throw new ProtocolException("heartbeat.type",
                "bad heartbeat.type " + Integer.toUnsignedString(type) + ", expected 1 (beat) or 2 (bye)");
        }
        final int arg = getInt(buf, 4);
        final long value = ((long)getInt(buf, 8) << 32) | (getInt(buf, 12) & 0xffffffffL);
        if (type == BEAT && arg != 0)
        {
            throw new ProtocolException("heartbeat.arg",
                "bad heartbeat.arg " + Integer.toUnsignedString(arg) + " in a beat, expected 0");
        }
        return new HeartbeatFrame(type, arg, value);
    }

    private static void putInt(final byte[] b, final int off, final int v)
    {
        b[off] = (byte)(v >>> 24);
        b[off + 1] = (byte)(v >>> 16);
        b[off + 2] = (byte)(v >>> 8);
        b[off + 3] = (byte)v;
    }

    private static int getInt(final byte[] b, final int off)
    {
        return ((b[off] & 0xff) << 24) | ((b[off + 1] & 0xff) << 16) | ((b[off + 2] & 0xff) << 8) | (b[off + 3] & 0xff);
    }
}
