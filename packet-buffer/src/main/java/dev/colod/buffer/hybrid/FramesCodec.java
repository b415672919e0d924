package dev.colod.buffer.hybrid;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;

/**
 * Records of hybrid mode's frames channel (docs/PROTOCOL.md section 10): {@code be8 kind, be8 nic, be16 length L,
 * L bytes}.
 */
public final class FramesCodec
{
    /** Primary to secondary: a frame that arrived for NIC {@code nic}, in arrival order. */
    public static final int INBOUND = 1;
    /** Secondary to primary: L = 40, be64 flow, 32-byte digest of a frame the secondary's guest sent on {@code nic}. */
    public static final int DIGEST = 2;
    /**
     * Both ways, L = 8, be64 checkpoint id. Primary: the frames of {@code nic} after it arrived after the VM paused for
     * that checkpoint. Secondary ({@code nic} 255: all NICs): the digests after it come from the copy that resumed
     * from that checkpoint.
     */
    public static final int ERA = 3;
    /**
     * Secondary to primary: L >= 17, be64 flow, be32 seq (after rewriting), be32 ack, be8 TCP flags, then the payload:
     * a TCP segment the secondary's guest sent on {@code nic}, compared by sequence number.
     */
    public static final int TCP = 4;
    public static final int TCP_HEADER = 17;
    /**
     * Secondary to primary: L >= 19, as {@link #TCP} with be16 window (the field as the copy sent it) after the flags:
     * what a secondary of this build sends, so the primary can keep the client within the copy's window.
     */
    public static final int TCP_WINDOW = 5;
    public static final int TCP_WINDOW_HEADER = 19;
    public static final int ALL_NICS = 255;
    public static final int DIGEST_LENGTH = 8 + FrameDigest.DIGEST_BYTES;

    private FramesCodec()
    {
    }

    /** One record as read; {@code body} is reused by the next {@link #read} of the same reader. */
    public static final class Record
    {
        public int kind;
        public int nic;
        public int length;
        public byte[] body = new byte[2048];

        public long be64()
        {
            long v = 0;
            for (int i = 0; i < 8; i++)
            {
                v = v << 8 | body[i] & 0xFF;
            }
            return v;
        }
    }

    /** Reads the next record into {@code r}; false at a clean end of stream. Names what is wrong otherwise. */
    public static boolean read(final DataInputStream in, final Record r, final String peer) throws IOException
    {
        final int kind = in.read();
        if (kind < 0)
        {
            return false;
        }
        r.kind = kind;
        r.nic = in.readUnsignedByte();
        r.length = in.readUnsignedShort();
        if (kind != INBOUND && kind != DIGEST && kind != ERA && kind != TCP && kind != TCP_WINDOW)
        {
            throw new IOException("frames channel from " + peer + ": unknown record kind " + kind);
        }
        if (kind == DIGEST && r.length != DIGEST_LENGTH || kind == ERA && r.length != 8)
        {
            throw new IOException("frames channel from " + peer + ": record kind " + kind + " has length " + r.length +
                ", expected " + (kind == ERA ? 8 : DIGEST_LENGTH));
        }
        if (kind == TCP && r.length < TCP_HEADER || kind == TCP_WINDOW && r.length < TCP_WINDOW_HEADER)
        {
            throw new IOException("frames channel from " + peer + ": record kind " + kind + " has length " + r.length +
                ", expected at least " + (kind == TCP ? TCP_HEADER : TCP_WINDOW_HEADER));
        }
        if (r.body.length < r.length)
        {
            r.body = new byte[r.length];
        }
        in.readFully(r.body, 0, r.length);
        return true;
    }

    public static void write(final DataOutputStream out, final int kind, final int nic, final byte[] body,
        final int off, final int len) throws IOException
    {
        out.writeByte(kind);
        out.writeByte(nic);
        out.writeShort(len);
        out.write(body, off, len);
    }

    public static void writeEra(final DataOutputStream out, final int nic, final long id) throws IOException
    {
        out.writeByte(ERA);
        out.writeByte(nic);
        out.writeShort(8);
        out.writeLong(id);
    }
}
