package dev.colod.core.protocol;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

/**
 * One frame on the heartbeat channel, 16 bytes, both directions (docs/PROTOCOL.md, "Heartbeats").
 * <pre>
 *  off size field
 *   0   4   type: 1 BEAT, 2 BYE
 *   4   4   BEAT: 0; BYE: reason (0 stop, 1 error, 2 failover requested)
 *   8   8   BEAT: sender's last completed checkpoint id; BYE: length L of the reason text, 0..1024
 *  16   L   BYE only: why the sender ends the session, UTF-8 (a sender before this field sent L = 0)
 * </pre>
 * A BYE says the session ends on purpose: the receiver must not treat the closing connection as the loss
 * of its peer (and the secondary must not fail over). Its text is what the sender's own status calls the end, so
 * the operator reads on this host what the other host refused for.
 */
public record HeartbeatFrame(int type, int arg, long value, String text)
{
    public static final int SIZE = 16;
    /** The longest BYE reason text, in bytes; a longer one is cut (on a character boundary) before it is sent. */
    public static final int MAX_TEXT = 1024;
    public static final int BEAT = 1;
    public static final int BYE = 2;
    public static final int BYE_STOP = 0;
    public static final int BYE_ERROR = 1;
    public static final int BYE_FAILOVER = 2;
    /** From the primary: its VM is gone (QEMU exited); the secondary resumes it from the last committed checkpoint. */
    public static final int BYE_VM_LOST = 3;

    public HeartbeatFrame(final int type, final int arg, final long value)
    {
        this(type, arg, value, "");
    }

    /** A goodbye with its reason text (cut to {@link #MAX_TEXT} bytes). */
    public static HeartbeatFrame bye(final int reason, final String text)
    {
        return new HeartbeatFrame(BYE, reason, 0, text == null ? "" : text);
    }

    /** The 16-byte header; a BYE's value field is its text's length. */
    public void encode(final byte[] b)
    {
        putInt(b, 0, type);
        putInt(b, 4, arg);
        final long v = type == BYE ? textBytes().length : value;
        putInt(b, 8, (int)(v >>> 32));
        putInt(b, 12, (int)v);
    }

    public void writeTo(final OutputStream out) throws IOException
    {
        final byte[] t = type == BYE ? textBytes() : new byte[0];
        final byte[] b = new byte[SIZE + t.length];
        encode(b);
        System.arraycopy(t, 0, b, SIZE, t.length);
        out.write(b);
        out.flush();
    }

    private byte[] textBytes()
    {
        String t = text;
        byte[] bytes = t.getBytes(StandardCharsets.UTF_8);
        while (bytes.length > MAX_TEXT)
        {
            t = t.substring(0, Math.min(t.length() - 1, MAX_TEXT));
            if (!t.isEmpty() && Character.isHighSurrogate(t.charAt(t.length() - 1)))
            {
                t = t.substring(0, t.length() - 1);
            }
            bytes = t.getBytes(StandardCharsets.UTF_8);
        }
        return bytes;
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
        if (type == BEAT)
        {
            return new HeartbeatFrame(type, arg, value);
        }
        if (value < 0 || value > MAX_TEXT)
        {
            throw new ProtocolException("heartbeat.bye-length",
                "bad heartbeat.bye-length " + Long.toUnsignedString(value) + ", expected 0.." + MAX_TEXT);
        }
        final byte[] t = new byte[(int)value];
        ColoChannel.readFully(in, t, 0, t.length, "heartbeat bye reason");
        return bye(arg, printable(new String(t, StandardCharsets.UTF_8)));
    }

    /** The peer's text as one log line: control characters (a newline could forge a log entry) become '?'. */
    private static String printable(final String s)
    {
        final StringBuilder b = new StringBuilder(s.length());
        s.codePoints().forEach(c -> b.appendCodePoint(Character.isISOControl(c) ? '?' : c));
        return b.toString();
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
