package dev.colod.core.protocol;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * The secondary's answer to a {@link Hello} (docs/PROTOCOL.md, "WELCOME").
 * <pre>
 *  off size field
 *   0   4   magic 0x434F4C44 ("COLD")
 *   4   2   version (2)
 *   6   2   status: 0 OK, 1 VERSION, 2 UNKNOWN_VM, 3 BUSY, 4 AUTH, 5 BAD_HELLO, 6 FAILED_OVER, 7 STALE_TOKEN
 *   8   8   session id (non-zero when OK)
 *  16   8   effective state-size limit: min(primary's, secondary's)
 *  24   8   id of the last checkpoint the secondary committed (0: none)
 *  32   8   the newest fencing token this peer has seen (0: none)
 *  40   2   reason length R, 0..1024
 *  42   R   reason, UTF-8 (empty when OK)
 * </pre>
 * After an OK WELCOME on the control channel the secondary sends {@code checkpoint-ready} once its heartbeat
 * channel is attached.
 */
public record Welcome(int status, long sessionId, long maxStateBytes, long lastCommitted, long token, String reason)
{
    public static final int OK = 0;
    public static final int VERSION = 1;
    public static final int UNKNOWN_VM = 2;
    public static final int BUSY = 3;
    public static final int AUTH = 4;
    public static final int BAD_HELLO = 5;
    public static final int FAILED_OVER = 6;
    public static final int STALE_TOKEN = 7;
    /** The VM differs between the hosts (HELLO shape): a checkpoint of one would not run on the other. */
    public static final int SHAPE = 8;
    private static final String[] NAMES = {"ok", "version", "unknown-vm", "busy", "auth", "bad-hello", "failed-over",
        "stale-token", "shape"};
    public static final int MAX_REASON_BYTES = 1024;

    public static Welcome refuse(final int status, final long token, final String reason)
    {
        return new Welcome(status, 0, 0, 0, token, reason == null ? "" : reason);
    }

    public static String statusName(final int status)
    {
        return status >= 0 && status < NAMES.length ? NAMES[status] : "status-" + status;
    }

    public void writeTo(final OutputStream os) throws IOException
    {
        byte[] why = (reason == null ? "" : reason).getBytes(StandardCharsets.UTF_8);
        if (why.length > MAX_REASON_BYTES)
        {
            why = Arrays.copyOf(why, MAX_REASON_BYTES);
        }
        final DataOutputStream out = new DataOutputStream(os);
        out.writeInt(Hello.MAGIC);
        out.writeShort(Hello.VERSION);
        out.writeShort(status);
        out.writeLong(sessionId);
        out.writeLong(maxStateBytes);
        out.writeLong(lastCommitted);
        out.writeLong(token);
        out.writeShort(why.length);
        out.write(why);
        out.flush();
    }

    public static Welcome readFrom(final InputStream is) throws IOException
    {
        final DataInputStream in = new DataInputStream(is);
        final int magic = in.readInt();
        if (magic != Hello.MAGIC)
        {
            throw new ProtocolException("welcome.magic",
                "bad welcome.magic 0x" + Integer.toHexString(magic) + ", expected 0x434f4c44 (\"COLD\"): not a colod peer");
        }
        final int version = in.readUnsignedShort();
        if (version != Hello.VERSION)
        {
            throw new ProtocolException("welcome.version",
                "unsupported welcome.version " + version + ", this side speaks " + Hello.VERSION);
        }
        final int status = in.readUnsignedShort();
        final long sessionId = in.readLong();
        final long maxState = in.readLong();
        final long lastCommitted = in.readLong();
        final long token = in.readLong();
        final int reasonLen = in.readUnsignedShort();
        if (reasonLen > MAX_REASON_BYTES)
        {
            throw new ProtocolException("welcome.reason", "bad welcome.reason length " + reasonLen + ", expected 0..1024");
        }
        final byte[] why = new byte[reasonLen];
        in.readFully(why);
        if (token < 0 || maxState < 0 || lastCommitted < 0)
        {
            throw new ProtocolException("welcome.session",
                "bad welcome: session " + sessionId + ", limit " + maxState + ", last committed " + lastCommitted +
                ", token " + Long.toUnsignedString(token));
        }
        return new Welcome(status, sessionId, maxState, lastCommitted, token, new String(why, StandardCharsets.UTF_8));
    }
}
