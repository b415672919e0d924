package dev.colod.buffer.hybrid;

import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;

/**
 * What hybrid mode compares of a frame (docs/ARCHITECTURE.md, "Normalisation"): its flow and a 32-byte digest of
 * its normalised form, so that two guests that answer alike produce equal digests although some header fields
 * differ between them.
 * <ul>
 * <li>Left out, because whoever sends recomputes them or they are per-guest clocks and counters, never state a
 * client depends on: IPv4 id and header checksum, IPv6 flow label, TCP and UDP checksums, the TCP window, the
 * TSval of the TCP timestamp option, the sequence number of a SYN (each guest picks its own ISN; the rewriter
 * maps the secondary's later ones onto the primary's), Ethernet padding after the IP datagram.</li>
 * <li>Compared: everything else (addresses, ports, protocol, flags, sequence and acknowledgement numbers,
 * options, payload; non-IP frames byte for byte).</li>
 * </ul>
 * Not thread-safe: one instance per thread (it keeps its {@link MessageDigest} and a scratch copy).
 */
public final class FrameDigest
{
    public static final int DIGEST_BYTES = 32;
    static final int ETH_HEADER = 14;
    static final int ETHERTYPE_IPV4 = 0x0800;
    static final int ETHERTYPE_IPV6 = 0x86DD;
    static final int ETHERTYPE_ARP = 0x0806;
    static final int ETHERTYPE_RARP = 0x8035;
    static final int PROTO_TCP = 6;
    static final int PROTO_UDP = 17;
    static final int TCP_SYN = 0x02;
    static final int TCP_ACK = 0x10;
    private static final long FNV_OFFSET = 0xcbf29ce484222325L;
    private static final long FNV_PRIME = 0x100000001b3L;

    private final MessageDigest sha;
    private byte[] scratch = new byte[2048];

    public FrameDigest()
    {
        try
        {
            sha = MessageDigest.getInstance("SHA-256");
        }
        catch (final NoSuchAlgorithmException ex)
        {
            throw new IllegalStateException("SHA-256 is missing from this JDK", ex);
        }
    }

    /**
     * The flow of a frame: ethertype, protocol, addresses and ports (IP with TCP or UDP), ethertype, protocol and
     * addresses (other IP), or the ethertype alone. Frames of one flow are compared in order.
     */
    public static long flow(final byte[] f, final int off, final int len)
    {
        return flow(f, off, len, false);
    }

    /**
     * The {@link #flow} of the frames that answer this one: the same key with source and destination (addresses and
     * ports) swapped, so a client's frame finds the guest's connection it acknowledges.
     */
    public static long reverseFlow(final byte[] f, final int off, final int len)
    {
        return flow(f, off, len, true);
    }

    private static long flow(final byte[] f, final int off, final int len, final boolean reverse)
    {
        if (len < ETH_HEADER)
        {
            return 0;
        }
        final int type = be16(f, off + 12);
        long h = mix(FNV_OFFSET, f, off + 12, 2);
        final Ip ip = Ip.of(f, off, len);
        if (ip == null)
        {
            return h;
        }
        final int n = type == ETHERTYPE_IPV4 ? 4 : 16;
        h = mix(h, f, off + ip.addrs + (reverse ? n : 0), n);
        h = mix(h, f, off + ip.addrs + (reverse ? 0 : n), n);
        h = mixByte(h, ip.proto);
        if ((ip.proto == PROTO_TCP || ip.proto == PROTO_UDP) && ip.l4 + 4 <= ip.end)
        {
            h = mix(h, f, off + ip.l4 + (reverse ? 2 : 0), 2);
            h = mix(h, f, off + ip.l4 + (reverse ? 0 : 2), 2);
        }
        return h;
    }

    /**
     * The acknowledgement number of a TCP segment with ACK set (as an unsigned 32-bit value), or -1 for anything else.
     * Reads the headers only.
     */
    static long tcpAck(final byte[] f, final int off, final int len)
    {
        final Ip ip = Ip.of(f, off, len);
        if (ip == null || ip.proto != PROTO_TCP || ip.l4 + 20 > ip.end || (f[ip.l4 + 13] & 0x10) == 0)
        {
            return -1;
        }
        return be32(f, ip.l4 + 8) & 0xFFFF_FFFFL;
    }

    /**
     * The sequence number just after a TCP FIN (its sequence number plus payload length plus one), or -1 if the frame is
     * no TCP segment with FIN. {@code len}: the frame's length; only its headers need be in {@code f}.
     */
    static long tcpFinEnd(final byte[] f, final int off, final int len)
    {
        final Ip ip = Ip.of(f, off, len);
        if (ip == null || ip.proto != PROTO_TCP || ip.l4 + 20 > ip.end || (f[ip.l4 + 13] & 0x01) == 0)
        {
            return -1;
        }
        final int payload = ip.end - ip.l4 - ((f[ip.l4 + 12] & 0xFF) >> 4) * 4;
        return be32(f, ip.l4 + 4) + Math.max(0, payload) + 1 & 0xFFFF_FFFFL;
    }

    /** True if the frame is a TCP SYN without ACK: a client opening a connection. */
    static boolean tcpOpening(final byte[] f, final int off, final int len)
    {
        final Ip ip = Ip.of(f, off, len);
        return ip != null && ip.proto == PROTO_TCP && ip.l4 + 20 <= ip.end && (f[ip.l4 + 13] & 0x12) == TCP_SYN;
    }

    /**
     * Writes the digest of the normalised frame into {@code out} (32 bytes at {@code outOff}); the frame itself is
     * not changed.
     */
    public void digest(final byte[] f, final int off, final int len, final byte[] out, final int outOff)
    {
        if (scratch.length < len)
        {
            scratch = new byte[Math.max(len, scratch.length * 2)];
        }
        final byte[] s = scratch;
        System.arraycopy(f, off, s, 0, len);
        final int n = normalise(s, len);
        sha.update(s, 0, n);
        try
        {
            sha.digest(out, outOff, DIGEST_BYTES);
        }
        catch (final java.security.DigestException ex)
        {
            throw new IllegalStateException(ex);
        }
    }

    /**
     * True for what a freshly loaded copy announces about itself and the primary never repeats: QEMU's RARP after
     * an incoming migration (ethertype 0x8035) and the guest's gratuitous ARP (sender address = target address)
     * that virtio-net's announce feature asks of it. The secondary does not digest them: they would stand in the ARP
     * flow before the frames the primary does send.
     */
    public static boolean selfAnnouncement(final byte[] f, final int off, final int len)
    {
        if (len < ETH_HEADER)
        {
            return false;
        }
        final int type = be16(f, off + 12);
        if (type == ETHERTYPE_RARP)
        {
            return true;
        }
        // ARP for IPv4 over Ethernet: sender IP at 28, target IP at 38 (after the 14-byte header)
        return type == ETHERTYPE_ARP && len >= ETH_HEADER + 28 && be16(f, off + ETH_HEADER + 2) == ETHERTYPE_IPV4 &&
            be32(f, off + ETH_HEADER + 14) == be32(f, off + ETH_HEADER + 24);
    }

    /** Convenience for tests and logs: the digest as a new array. */
    public byte[] digest(final byte[] f, final int off, final int len)
    {
        final byte[] d = new byte[DIGEST_BYTES];
        digest(f, off, len, d, 0);
        return d;
    }

    /** Normalises frame {@code s[0, len)} in place; returns the length that counts (padding cut). */
    static int normalise(final byte[] s, final int len)
    {
        final Ip ip = Ip.of(s, 0, len);
        if (ip == null)
        {
            return len;
        }
        if (ip.v4)
        {
            s[ETH_HEADER + 4] = 0; // id
            s[ETH_HEADER + 5] = 0;
            s[ETH_HEADER + 10] = 0; // header checksum
            s[ETH_HEADER + 11] = 0;
        }
        else
        {
            s[ETH_HEADER + 1] &= (byte)0xF0; // flow label
            s[ETH_HEADER + 2] = 0;
            s[ETH_HEADER + 3] = 0;
        }
        final int l4 = ip.l4;
        if (ip.proto == PROTO_TCP && l4 + 20 <= ip.end)
        {
            final int flags = s[l4 + 13] & 0xFF;
            if ((flags & TCP_SYN) != 0)
            {
                Arrays.fill(s, l4 + 4, l4 + 8, (byte)0);
            }
            s[l4 + 14] = 0; // window
            s[l4 + 15] = 0;
            s[l4 + 16] = 0; // checksum
            s[l4 + 17] = 0;
            final int doff = ((s[l4 + 12] & 0xFF) >> 4) * 4;
            final int ts = option(s, l4, Math.min(l4 + doff, ip.end), TcpOption.TIMESTAMP);
            if (ts >= 0 && ts + 10 <= ip.end)
            {
                Arrays.fill(s, ts + 2, ts + 6, (byte)0); // TSval; TSecr echoes the peer and is the same on both
            }
        }
        else if (ip.proto == PROTO_UDP && l4 + 8 <= ip.end)
        {
            s[l4 + 6] = 0;
            s[l4 + 7] = 0;
        }
        return ip.end;
    }

    /** TCP option kinds this code looks at. */
    static final class TcpOption
    {
        static final int END = 0;
        static final int NOP = 1;
        static final int SACK = 5;
        static final int TIMESTAMP = 8;

        private TcpOption()
        {
        }
    }

    /** Offset of TCP option {@code kind} between the fixed header at {@code l4} and {@code end}, or -1. */
    static int option(final byte[] s, final int l4, final int end, final int kind)
    {
        int p = l4 + 20;
        while (p < end)
        {
            final int k = s[p] & 0xFF;
            if (k == TcpOption.END)
            {
                return -1;
            }
            if (k == TcpOption.NOP)
            {
                p++;
                continue;
            }
            if (p + 1 >= end)
            {
                return -1;
            }
            final int olen = s[p + 1] & 0xFF;
            if (olen < 2 || p + olen > end)
            {
                return -1;
            }
            if (k == kind)
            {
                return p;
            }
            p += olen;
        }
        return -1;
    }

    /** Where the IP and transport headers of a frame are (offsets relative to the array), or null if not IP. */
    static final class Ip
    {
        final boolean v4;
        final int proto;
        /** Offset of the source address (destination follows). */
        final int addrs;
        final int l4;
        /** End of the datagram (anything after is Ethernet padding). */
        final int end;

        private Ip(final boolean v4, final int proto, final int addrs, final int l4, final int end)
        {
            this.v4 = v4;
            this.proto = proto;
            this.addrs = addrs;
            this.l4 = l4;
            this.end = end;
        }

        static Ip of(final byte[] f, final int off, final int len)
        {
            if (len < ETH_HEADER + 20)
            {
                return null;
            }
            final int type = be16(f, off + 12);
            final int ip = off + ETH_HEADER;
            if (type == ETHERTYPE_IPV4 && (f[ip] & 0xF0) == 0x40)
            {
                final int ihl = (f[ip] & 0x0F) * 4;
                final int total = be16(f, ip + 2);
                if (ihl < 20 || total < ihl || ETH_HEADER + total > len)
                {
                    return null;
                }
                return new Ip(true, f[ip + 9] & 0xFF, ip + 12, ip + ihl, ip + total);
            }
            if (type == ETHERTYPE_IPV6 && len >= ETH_HEADER + 40 && (f[ip] & 0xF0) == 0x60)
            {
                final int payload = be16(f, ip + 4);
                if (ETH_HEADER + 40 + payload > len)
                {
                    return null;
                }
                return new Ip(false, f[ip + 6] & 0xFF, ip + 8, ip + 40, ip + 40 + payload);
            }
            return null;
        }
    }

    static int be16(final byte[] b, final int at)
    {
        return (b[at] & 0xFF) << 8 | b[at + 1] & 0xFF;
    }

    static int be32(final byte[] b, final int at)
    {
        return (b[at] & 0xFF) << 24 | (b[at + 1] & 0xFF) << 16 | (b[at + 2] & 0xFF) << 8 | b[at + 3] & 0xFF;
    }

    static void putBe16(final byte[] b, final int at, final int v)
    {
        b[at] = (byte)(v >>> 8);
        b[at + 1] = (byte)v;
    }

    static void putBe32(final byte[] b, final int at, final int v)
    {
        b[at] = (byte)(v >>> 24);
        b[at + 1] = (byte)(v >>> 16);
        b[at + 2] = (byte)(v >>> 8);
        b[at + 3] = (byte)v;
    }

    private static long mix(long h, final byte[] b, final int at, final int n)
    {
        for (int i = 0; i < n; i++)
        {
            h = (h ^ (b[at + i] & 0xFF)) * FNV_PRIME;
        }
        return h;
    }

    private static long mixByte(final long h, final int v)
    {
        return (h ^ (v & 0xFF)) * FNV_PRIME;
    }

    /**
     * A short description of a frame for logs and status: protocol, addresses, ports, TCP flags, length. It reads
     * only the headers (Ethernet, IP, the fixed TCP header), so {@code f} may hold just those of a {@code len}-byte
     * frame.
     */
    public static String describe(final byte[] f, final int off, final int len)
    {
        if (len < ETH_HEADER)
        {
            return "runt frame of " + len + " bytes";
        }
        final Ip ip = Ip.of(f, off, len);
        if (ip == null)
        {
            return String.format("ethertype 0x%04x, %d bytes", be16(f, off + 12), len);
        }
        final StringBuilder b = new StringBuilder();
        final String src = address(f, ip.addrs, ip.v4);
        final String dst = address(f, ip.addrs + (ip.v4 ? 4 : 16), ip.v4);
        if ((ip.proto == PROTO_TCP || ip.proto == PROTO_UDP) && ip.l4 + 8 <= ip.end)
        {
            b.append(ip.proto == PROTO_TCP ? "tcp " : "udp ").append(src).append(':').append(be16(f, ip.l4))
                .append(" > ").append(dst).append(':').append(be16(f, ip.l4 + 2));
            if (ip.proto == PROTO_TCP && ip.l4 + 20 <= ip.end)
            {
                final int flags = f[ip.l4 + 13] & 0xFF;
                b.append(" [");
                final String names = "FSRPAU";
                for (int i = 0; i < names.length(); i++)
                {
                    if ((flags & 1 << i) != 0)
                    {
                        b.append(names.charAt(i));
                    }
                }
                b.append("] seq ").append(Integer.toUnsignedString(be32(f, ip.l4 + 4)))
                    .append(" payload ").append(ip.end - ip.l4 - ((f[ip.l4 + 12] & 0xFF) >> 4) * 4);
            }
        }
        else
        {
            b.append("ip proto ").append(ip.proto).append(' ').append(src).append(" > ").append(dst);
        }
        return b.append(", ").append(len).append(" bytes").toString();
    }

    private static String address(final byte[] f, final int at, final boolean v4)
    {
        if (v4)
        {
            return (f[at] & 0xFF) + "." + (f[at + 1] & 0xFF) + "." + (f[at + 2] & 0xFF) + "." + (f[at + 3] & 0xFF);
        }
        final StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < 16; i += 2)
        {
            b.append(i == 0 ? "" : ":").append(Integer.toHexString(be16(f, at + i)));
        }
        return b.append(']').toString();
    }
}
