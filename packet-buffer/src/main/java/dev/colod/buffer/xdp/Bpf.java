package dev.colod.buffer.xdp;

import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.NativeLong;
import com.sun.jna.Platform;
import com.sun.jna.Pointer;
import dev.colod.os.LibC;

import java.io.IOException;
import java.nio.charset.StandardCharsets;

/**
 * The {@code bpf(2)} system call through JNA: maps, program loading (with the kernel verifier's log on refusal)
 * and links, the pieces colod's XDP data path needs and nothing more. No compiler at run time: programs are
 * arrays of instructions built with {@link Insn} (see {@link XdpPrograms}). File descriptors are plain ints; the
 * caller closes them ({@link #close(int)}), and the kernel undoes a link and frees a program or map when its
 * last descriptor closes, also when the agent dies.
 */
public final class Bpf
{
    static
    {
        Native.register(Platform.C_LIBRARY_NAME);
    }

    // uapi/asm/unistd_64.h
    private static final long SYS_BPF = 321;
    // uapi/linux/bpf.h: commands
    private static final int BPF_MAP_CREATE = 0;
    private static final int BPF_MAP_LOOKUP_ELEM = 1;
    private static final int BPF_MAP_UPDATE_ELEM = 2;
    private static final int BPF_PROG_LOAD = 5;
    private static final int BPF_LINK_CREATE = 28;
    // map and program types, attach types
    public static final int BPF_MAP_TYPE_XSKMAP = 17;
    public static final int BPF_MAP_TYPE_ARRAY = 2;
    public static final int BPF_PROG_TYPE_XDP = 6;
    public static final int BPF_XDP = 37;
    // uapi/linux/if_link.h
    public static final int XDP_FLAGS_SKB_MODE = 1 << 1;
    public static final int XDP_FLAGS_DRV_MODE = 1 << 2;
    private static final int ATTR_SIZE = 128;
    private static final int LOG_SIZE = 1 << 20;

    private Bpf()
    {
    }

    private static native NativeLong syscall(long number, int cmd, Pointer attr, int size);

    private static native int close(int fd);

    private static int bpf(final int cmd, final Memory attr, final String what) throws IOException
    {
        final long r = syscall(SYS_BPF, cmd, attr, ATTR_SIZE).longValue();
        if (r < 0)
        {
            throw new IOException(what + ": " + LibC.lastError());
        }
        return (int)r;
    }

    private static Memory attr()
    {
        final Memory m = new Memory(ATTR_SIZE);
        m.clear();
        return m;
    }

    /** A map of {@code type}; returns its descriptor. */
    public static int mapCreate(final int type, final int keySize, final int valueSize, final int maxEntries,
        final String name) throws IOException
    {
        final Memory a = attr();
        a.setInt(0, type);
        a.setInt(4, keySize);
        a.setInt(8, valueSize);
        a.setInt(12, maxEntries);
        final byte[] n = name.getBytes(StandardCharsets.US_ASCII);
        a.write(28, n, 0, Math.min(15, n.length));
        return bpf(BPF_MAP_CREATE, a, "bpf(BPF_MAP_CREATE " + name + ")");
    }

    /** The {@code valueSize}-byte value at 4-byte {@code key}, as little-endian longs (an ARRAY map's counters). */
    public static long[] mapLookupLongs(final int mapFd, final int key, final int valueSize) throws IOException
    {
        final Memory k = new Memory(4);
        k.setInt(0, key);
        final Memory v = new Memory(valueSize);
        v.clear();
        final Memory a = attr();
        a.setInt(0, mapFd);
        a.setLong(8, Pointer.nativeValue(k));
        a.setLong(16, Pointer.nativeValue(v));
        bpf(BPF_MAP_LOOKUP_ELEM, a, "bpf(BPF_MAP_LOOKUP_ELEM fd " + mapFd + " key " + key + ")");
        final long[] out = new long[valueSize / 8];
        for (int i = 0; i < out.length; i++)
        {
            out[i] = v.getLong(8L * i);
        }
        return out;
    }

    /** {@code map[key] = value} for a map of 4-byte keys and values (XSKMAP: queue index to AF_XDP socket). */
    public static void mapUpdate(final int mapFd, final int key, final int value) throws IOException
    {
        final Memory k = new Memory(4);
        k.setInt(0, key);
        final Memory v = new Memory(4);
        v.setInt(0, value);
        final Memory a = attr();
        a.setInt(0, mapFd);
        a.setLong(8, Pointer.nativeValue(k));
        a.setLong(16, Pointer.nativeValue(v));
        bpf(BPF_MAP_UPDATE_ELEM, a, "bpf(BPF_MAP_UPDATE_ELEM fd " + mapFd + " key " + key + ")");
    }

    /** Refused by the verifier (or the loader): the message carries the verifier's log. */
    public static final class VerifierException extends IOException
    {
        private final String log;

        VerifierException(final String message, final String log)
        {
            super(message + (log.isEmpty() ? "" : "; verifier log:\n" + log));
            this.log = log;
        }

        public String verifierLog()
        {
            return log;
        }
    }

    /**
     * Loads program {@code name} of {@code type} (GPL, expected attach type {@code attachType}) after the kernel's
     * verifier checks it; returns its descriptor. On refusal the exception carries the verifier's log.
     */
    public static int progLoad(final int type, final int attachType, final String name, final long[] insns)
        throws IOException
    {
        final Memory code = new Memory(8L * insns.length);
        for (int i = 0; i < insns.length; i++)
        {
            code.setLong(8L * i, insns[i]);
        }
        final Memory license = new Memory(4);
        license.setString(0, "GPL", "US-ASCII");
        final Memory log = new Memory(LOG_SIZE);
        log.setByte(0, (byte)0);
        final Memory a = attr();
        a.setInt(0, type);
        a.setInt(4, insns.length);
        a.setLong(8, Pointer.nativeValue(code));
        a.setLong(16, Pointer.nativeValue(license));
        a.setInt(24, 1); // log level 1: the verifier explains a refusal
        a.setInt(28, LOG_SIZE);
        a.setLong(32, Pointer.nativeValue(log));
        final byte[] n = name.getBytes(StandardCharsets.US_ASCII);
        a.write(48, n, 0, Math.min(15, n.length));
        a.setInt(68, attachType);
        final long r = syscall(SYS_BPF, BPF_PROG_LOAD, a, ATTR_SIZE).longValue();
        if (r < 0)
        {
            final String why = LibC.lastError();
            throw new VerifierException("bpf(BPF_PROG_LOAD " + name + ", " + insns.length + " instructions) refused: " + why,
                log.getString(0, "US-ASCII").trim());
        }
        return (int)r;
    }

    /**
     * Attaches XDP program {@code progFd} to the interface {@code ifindex} of the calling thread's network namespace
     * through a BPF link ({@code flags}: {@link #XDP_FLAGS_SKB_MODE} or {@link #XDP_FLAGS_DRV_MODE}); returns the
     * link's descriptor. The program stays attached while the link is open: closing it, or the agent dying,
     * detaches it.
     */
    public static int attachXdp(final int progFd, final int ifindex, final int flags, final String what)
        throws IOException
    {
        final Memory a = attr();
        a.setInt(0, progFd);
        a.setInt(4, ifindex);
        a.setInt(8, BPF_XDP);
        a.setInt(12, flags);
        return bpf(BPF_LINK_CREATE, a, "bpf(BPF_LINK_CREATE xdp on " + what + ", ifindex " + ifindex + ")");
    }

    public static void close(final int fd, final String what) throws IOException
    {
        if (close(fd) != 0)
        {
            throw new IOException("close(" + what + "): " + LibC.lastError());
        }
    }

    /**
     * One eBPF instruction as the kernel reads it (little-endian struct bpf_insn: opcode, dst:4 src:4, off:16,
     * imm:32), packed in a long in memory order.
     */
    public static final class Insn
    {
        // classes, sizes, modes, ops (uapi/linux/bpf_common.h, bpf.h)
        static final int LDX = 0x01;
        static final int ST = 0x02;
        static final int STX = 0x03;
        static final int ATOMIC = 0xc0;
        static final int SUB = 0x10;
        static final int ADD = 0x00;
        static final int JEQ = 0x10;
        static final int ALU64 = 0x07;
        static final int JMP = 0x05;
        static final int LD = 0x00;
        static final int W = 0x00;
        static final int DW = 0x18;
        static final int MEM = 0x60;
        static final int IMM = 0x00;
        static final int MOV = 0xb0;
        static final int K = 0x00;
        static final int X = 0x08;
        static final int CALL = 0x80;
        static final int EXIT = 0x90;
        static final int PSEUDO_MAP_FD = 1;

        private Insn()
        {
        }

        static long raw(final int opcode, final int dst, final int src, final int off, final int imm)
        {
            return (opcode & 0xffL) | ((long)(dst & 0xf) << 8) | ((long)(src & 0xf) << 12) | ((long)(off & 0xffff) << 16) |
                ((imm & 0xffffffffL) << 32);
        }

        /** {@code dst = *(u32 *)(src + off)} */
        public static long loadWord(final int dst, final int src, final int off)
        {
            return raw(LDX | MEM | W, dst, src, off, 0);
        }

        /** {@code dst = imm} (64-bit register) */
        public static long movImm(final int dst, final int imm)
        {
            return raw(ALU64 | MOV | K, dst, 0, 0, imm);
        }

        /** {@code dst = src} */
        public static long movReg(final int dst, final int src)
        {
            return raw(ALU64 | MOV | X, dst, src, 0, 0);
        }

        /** {@code dst -= src} (64-bit) */
        public static long subReg(final int dst, final int src)
        {
            return raw(ALU64 | SUB | X, dst, src, 0, 0);
        }

        /** {@code dst += imm} (64-bit) */
        public static long addImm(final int dst, final int imm)
        {
            return raw(ALU64 | ADD | K, dst, 0, 0, imm);
        }

        /** {@code *(u32 *)(dst + off) = imm} */
        public static long storeWordImm(final int dst, final int off, final int imm)
        {
            return raw(ST | MEM | W, dst, 0, off, imm);
        }

        /** {@code if (dst == imm) skip the next {@code skip} instructions} */
        public static long jumpIfEqual(final int dst, final int imm, final int skip)
        {
            return raw(JMP | JEQ | K, dst, 0, skip, imm);
        }

        /** {@code lock *(u64 *)(dst + off) += src} (atomic) */
        public static long atomicAdd64(final int dst, final int off, final int src)
        {
            return raw(STX | ATOMIC | DW, dst, src, off, 0);
        }

        /** {@code dst = map} (the map's descriptor, resolved by the loader): two instruction slots. */
        public static long[] loadMap(final int dst, final int mapFd)
        {
            return new long[]{raw(LD | IMM | DW, dst, PSEUDO_MAP_FD, 0, mapFd), raw(0, 0, 0, 0, 0)};
        }

        /** {@code r0 = helper(r1..r5)} */
        public static long call(final int helper)
        {
            return raw(JMP | CALL, 0, 0, 0, helper);
        }

        /** {@code return r0} */
        public static long exit()
        {
            return raw(JMP | EXIT, 0, 0, 0, 0);
        }
    }
}
