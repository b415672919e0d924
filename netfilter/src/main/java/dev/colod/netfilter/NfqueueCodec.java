package dev.colod.netfilter;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * nfnetlink_queue messages (linux/netfilter/nfnetlink_queue.h, linux/netfilter/nfnetlink.h,
 * linux/netlink.h). Netlink headers are host order (little-endian here); nfnetlink payloads big-endian.
 */
final class NfqueueCodec
{
    // linux/netlink.h
    static final int NLMSG_ERROR = 2;
    static final int NLM_F_REQUEST = 1;
    static final int NLM_F_ACK = 4;
    // linux/netfilter/nfnetlink.h: NFNL_SUBSYS_QUEUE
    static final int SUBSYS_QUEUE = 3;
    // linux/netfilter/nfnetlink_queue.h: message types
    static final int MSG_PACKET = 0;
    static final int MSG_VERDICT = 1;
    static final int MSG_CONFIG = 2;
    static final int MSG_VERDICT_BATCH = 3;
    // config attributes
    static final int CFG_CMD = 1;
    static final int CFG_PARAMS = 2;
    static final int CFG_QUEUE_MAXLEN = 3;
    static final int CFG_MASK = 4;
    static final int CFG_FLAGS = 5;
    static final int CMD_BIND = 1;
    static final int CMD_UNBIND = 2;
    static final int COPY_META = 1;
    static final int CFG_F_FAIL_OPEN = 1;
    // packet / verdict attributes
    static final int ATTR_PACKET_HDR = 1;
    static final int ATTR_VERDICT_HDR = 2;
    // linux/netfilter.h
    static final int NF_DROP = 0;
    static final int NF_ACCEPT = 1;

    private NfqueueCodec()
    {
    }

    static ByteBuffer buffer(final int size)
    {
        return ByteBuffer.allocateDirect(size).order(ByteOrder.nativeOrder());
    }

    /** Starts a message: nlmsghdr + nfgenmsg; {@link #end} fills the length. */
    static int begin(final ByteBuffer b, final int msg, final int flags, final int seq, final int queue)
    {
        final int start = b.position();
        b.putInt(0).putShort((short)((SUBSYS_QUEUE << 8) | msg)).putShort((short)flags).putInt(seq).putInt(0);
        b.put((byte)0).put((byte)0).order(ByteOrder.BIG_ENDIAN).putShort((short)queue).order(ByteOrder.nativeOrder());
        return start;
    }

    static void end(final ByteBuffer b, final int start)
    {
        b.putInt(start, b.position() - start);
    }

    /** An attribute with a big-endian payload written by {@code body}; padded to 4 bytes. */
    static void attr(final ByteBuffer b, final int type, final byte[] payload)
    {
        b.putShort((short)(4 + payload.length)).putShort((short)type).put(payload);
        while ((b.position() & 3) != 0)
        {
            b.put((byte)0);
        }
    }

    static byte[] be32(final int v)
    {
        return new byte[]{(byte)(v >>> 24), (byte)(v >>> 16), (byte)(v >>> 8), (byte)v};
    }

    static byte[] cmd(final int cmd)
    {
        return new byte[]{(byte)cmd, 0, 0, 0}; // u8 command, u8 pad, be16 pf (unused since Linux 3.8)
    }

    static byte[] params(final int copyRange, final int mode)
    {
        final byte[] p = new byte[5];
        System.arraycopy(be32(copyRange), 0, p, 0, 4);
        p[4] = (byte)mode;
        return p;
    }

    static byte[] verdictHdr(final int verdict, final int id)
    {
        final byte[] p = new byte[8];
        System.arraycopy(be32(verdict), 0, p, 0, 4);
        System.arraycopy(be32(id), 0, p, 4, 4);
        return p;
    }
}
