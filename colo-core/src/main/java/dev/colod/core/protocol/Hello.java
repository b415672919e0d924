package dev.colod.core.protocol;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

/**
 * The primary's opening of a channel, sent before anything else (docs/PROTOCOL.md, "HELLO").
 * <pre>
 *  off size field
 *   0   4   magic 0x434F4C44 ("COLD")
 *   4   2   version (2)
 *   6   1   channel: 0 control, 1 heartbeat, 2 probe (asks only whether this peer stands by or runs the VM),
 *           3 frames (hybrid mode)
 *   7   1   mode: 0 strict, 1 speculative, 2 hybrid
 *   8   8   session id: 0 on a control channel, the WELCOME's id on a heartbeat or frames channel
 *  16   8   maximum checkpoint state bytes the primary will send
 *  24   4   heartbeat interval ms
 *  28   4   heartbeat timeout ms
 *  32   8   fencing token: the arbiter revision under which the primary last held the VM's key (0: unarbitrated)
 *  40   2   vm name length L, 1..255
 *  42   2   shape length A, 0..4096 (0: not compared)
 *  44   L   vm name, UTF-8
 *  44+L A   the VM's shape ({@link VmShape}), UTF-8: on a control channel; empty on the others
 * </pre>
 */
public record Hello(int channel, int mode, long sessionId, long maxStateBytes, int heartbeatIntervalMs,
                    int heartbeatTimeoutMs, long token, String vmName, byte[] shape)
{
    public static final int MAGIC = 0x434F4C44;
    public static final int VERSION = 2;
    /** Bytes before the vm name. */
    public static final int FIXED_BYTES = 44;
    public static final int CHANNEL_CONTROL = 0;
    public static final int CHANNEL_HEARTBEAT = 1;
    public static final int CHANNEL_PROBE = 2;
    /** Hybrid mode's frames channel (PROTOCOL.md section 10). */
    public static final int CHANNEL_FRAMES = 3;
    public static final int MODE_STRICT = 0;
    public static final int MODE_SPECULATIVE = 1;
    /** Hybrid: the secondary runs a copy of the VM, suspended at checkpoint-request, resumed after vmstate-loaded. */
    public static final int MODE_HYBRID = 2;
    public static final int MAX_NAME_BYTES = 255;
    public static final int MAX_SHAPE_BYTES = 4096;

    public void writeTo(final OutputStream os) throws IOException
    {
        final byte[] name = vmName.getBytes(StandardCharsets.UTF_8);
        final DataOutputStream out = new DataOutputStream(os);
        out.writeInt(MAGIC);
        out.writeShort(VERSION);
        out.writeByte(channel);
        out.writeByte(mode);
        out.writeLong(sessionId);
        out.writeLong(maxStateBytes);
        out.writeInt(heartbeatIntervalMs);
        out.writeInt(heartbeatTimeoutMs);
        out.writeLong(token);
        out.writeShort(name.length);
        out.writeShort(shape.length);
        out.write(name);
        out.write(shape);
        out.flush();
    }

    /** Reads and validates a HELLO; every refusal names the field. Reads at most 44 + 255 + 4096 bytes. */
    public static Hello readFrom(final InputStream is) throws IOException
    {
        final DataInputStream in = new DataInputStream(is);
        final int magic = in.readInt();
        if (magic != MAGIC)
        {
            throw new ProtocolException("hello.magic",
                "bad hello.magic 0x" + Integer.toHexString(magic) + ", expected 0x434f4c44 (\"COLD\"): not a colod peer");
        }
        final int version = in.readUnsignedShort();
        if (version != VERSION)
        {
            throw new ProtocolException("hello.version",
                "unsupported hello.version " + version + ", this side speaks " + VERSION);
        }
        final int channel = in.readUnsignedByte();
        if (channel != CHANNEL_CONTROL && channel != CHANNEL_HEARTBEAT && channel != CHANNEL_PROBE &&
            channel != CHANNEL_FRAMES)
        {
            throw new ProtocolException("hello.channel", "bad hello.channel " + channel + ", expected 0..3");
        }
        final int mode = in.readUnsignedByte();
        if (mode != MODE_STRICT && mode != MODE_SPECULATIVE && mode != MODE_HYBRID)
        {
            throw new ProtocolException("hello.mode", "bad hello.mode " + mode + ", expected 0, 1 or 2");
        }
        final long sessionId = in.readLong();
        final long maxState = in.readLong();
        if (maxState < 0)
        {
            throw new ProtocolException("hello.max-state-bytes",
                "bad hello.max-state-bytes " + Long.toUnsignedString(maxState) + ": above 2^63-1");
        }
        final int hbInterval = in.readInt();
        final int hbTimeout = in.readInt();
        if (hbInterval <= 0 || hbTimeout <= hbInterval)
        {
            throw new ProtocolException("hello.heartbeat",
                "bad hello.heartbeat interval " + hbInterval + " ms / timeout " + hbTimeout +
                " ms: need 0 < interval < timeout");
        }
        final long token = in.readLong();
        if (token < 0)
        {
            throw new ProtocolException("hello.token", "bad hello.token " + Long.toUnsignedString(token) + ": above 2^63-1");
        }
        final int nameLen = in.readUnsignedShort();
        if (nameLen == 0 || nameLen > MAX_NAME_BYTES)
        {
            throw new ProtocolException("hello.vm-name", "bad hello.vm-name length " + nameLen + ", expected 1..255");
        }
        final int shapeLen = in.readUnsignedShort();
        if (shapeLen > MAX_SHAPE_BYTES)
        {
            throw new ProtocolException("hello.shape", "bad hello.shape length " + shapeLen + ", expected 0..4096");
        }
        final byte[] name = new byte[nameLen];
        in.readFully(name);
        final byte[] shape = new byte[shapeLen];
        in.readFully(shape);
        return new Hello(channel, mode, sessionId, maxState, hbInterval, hbTimeout, token,
            new String(name, StandardCharsets.UTF_8), shape);
    }

    /** The name of channel {@code channel} in messages. */
    public static String channelName(final int channel)
    {
        return switch (channel)
        {
            case CHANNEL_CONTROL -> "control";
            case CHANNEL_HEARTBEAT -> "heartbeat";
            case CHANNEL_PROBE -> "probe";
            case CHANNEL_FRAMES -> "frames";
            default -> "channel " + channel;
        };
    }
}
