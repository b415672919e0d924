package dev.colod.buffer.xdp;

import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.NativeLong;
import com.sun.jna.Platform;
import com.sun.jna.Pointer;
import dev.colod.os.LibC;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.function.LongConsumer;

/**
 * An AF_XDP socket (uapi/linux/if_xdp.h) bound to one queue of one interface, with its rings mapped into this
 * process: RX and TX descriptors (address in the UMEM, length), and the UMEM's fill and completion rings of
 * addresses. The UMEM is page-aligned anonymous memory cut into fixed chunks. A second socket can share the
 * first one's UMEM on another interface ({@link #sharing}): a frame received by one can then be sent by the
 * other by handing over its address, never copied by this process. Rings are single-producer/single-consumer
 * with the kernel: indices are read with acquire and published with release semantics. Not thread-safe: one
 * thread (the NIC's loop) uses a socket.
 */
public final class XskSocket implements AutoCloseable
{
    static
    {
        Native.register(Platform.C_LIBRARY_NAME);
    }

    private static final int AF_XDP = 44;
    private static final int SOCK_RAW = 3;
    private static final int SOL_XDP = 283;
    private static final int SOL_SOCKET = 1;
    private static final int SO_SNDBUFFORCE = 32;
    private static final int XDP_MMAP_OFFSETS = 1;
    private static final int XDP_RX_RING = 2;
    private static final int XDP_TX_RING = 3;
    private static final int XDP_UMEM_REG = 4;
    private static final int XDP_UMEM_FILL_RING = 5;
    private static final int XDP_UMEM_COMPLETION_RING = 6;
    private static final int XDP_STATISTICS = 7;
    public static final int XDP_SHARED_UMEM = 1;
    public static final int XDP_COPY = 1 << 1;
    private static final long PGOFF_RX_RING = 0;
    private static final long PGOFF_TX_RING = 0x80000000L;
    private static final long PGOFF_FILL_RING = 0x100000000L;
    private static final long PGOFF_COMPLETION_RING = 0x180000000L;
    private static final int PROT_READ = 1;
    private static final int PROT_WRITE = 2;
    private static final int MAP_SHARED = 1;
    private static final int MAP_PRIVATE = 2;
    private static final int MAP_POPULATE = 0x8000;
    private static final int MAP_ANONYMOUS = 0x20;
    private static final int MSG_DONTWAIT = 0x40;
    static final VarHandle INT = MethodHandles.byteBufferViewVarHandle(int[].class, ByteOrder.nativeOrder());

    private static native int socket(int domain, int type, int protocol);

    private static native int setsockopt(int fd, int level, int name, Pointer value, int len);

    private static native int getsockopt(int fd, int level, int name, Pointer value, Pointer len);

    private static native int bind(int fd, Pointer addr, int len);

    private static native Pointer mmap(Pointer addr, long len, int prot, int flags, int fd, long off);

    private static native int munmap(Pointer addr, long len);

    private static native NativeLong sendto(int fd, Pointer buf, long len, int flags, Pointer to, int tolen);

    private static native int close(int fd);

    /** A UMEM: {@code chunks} chunks of {@code chunkSize} bytes, page-aligned, owned by the first socket. */
    public static final class Umem implements AutoCloseable
    {
        final Pointer base;
        final long length;
        public final int chunkSize;
        public final int chunks;
        /** The whole UMEM as a buffer (frames are read and written here). */
        public final ByteBuffer bytes;

        public Umem(final int chunks, final int chunkSize) throws IOException
        {
            this.chunks = chunks;
            this.chunkSize = chunkSize;
            this.length = (long)chunks * chunkSize;
            final Pointer p = mmap(null, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
            if (Pointer.nativeValue(p) == -1L)
            {
                throw new IOException("mmap of a " + length + "-byte UMEM: " + LibC.lastError());
            }
            base = p;
            bytes = p.getByteBuffer(0, length).order(ByteOrder.nativeOrder());
        }

        @Override
        public void close()
        {
            munmap(base, length);
        }
    }

    /** One mapped ring. Entries: 8-byte addresses (fill, completion) or 16-byte descriptors (RX, TX). */
    static final class Ring
    {
        final Pointer map;
        final long mapLength;
        final ByteBuffer b;
        final int producer;
        final int consumer;
        final int desc;
        final int size;
        final int mask;
        final int entry;

        Ring(final int fd, final long pgoff, final ByteBuffer offsets, final int at, final int size, final int entry,
            final String what) throws IOException
        {
            this.producer = (int)offsets.getLong(at);
            this.consumer = (int)offsets.getLong(at + 8);
            this.desc = (int)offsets.getLong(at + 16);
            this.size = size;
            this.mask = size - 1;
            this.entry = entry;
            this.mapLength = desc + (long)size * entry;
            final Pointer p = mmap(null, mapLength, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff);
            if (Pointer.nativeValue(p) == -1L)
            {
                throw new IOException("mmap of the " + what + " ring: " + LibC.lastError());
            }
            map = p;
            b = p.getByteBuffer(0, mapLength).order(ByteOrder.nativeOrder());
        }

        int producer()
        {
            return (int)INT.getAcquire(b, producer);
        }

        void producer(final int v)
        {
            INT.setRelease(b, producer, v);
        }

        int consumer()
        {
            return (int)INT.getAcquire(b, consumer);
        }

        void consumer(final int v)
        {
            INT.setRelease(b, consumer, v);
        }

        int slot(final int index)
        {
            return desc + (index & mask) * entry;
        }

        void unmap()
        {
            munmap(map, mapLength);
        }
    }

    private final int fd;
    private final String where;
    public final Umem umem;
    final Ring rx;
    final Ring tx;
    final Ring fill;
    final Ring completion;
    private int rxConsumer;
    private int txProducer;
    private int fillProducer;
    private int completionConsumer;
    /** Send kicks (system calls) made: what "no system call per frame" is measured by. */
    public long kicks;

    private XskSocket(final int fd, final String where, final Umem umem, final Ring rx, final Ring tx, final Ring fill,
        final Ring completion)
    {
        this.fd = fd;
        this.where = where;
        this.umem = umem;
        this.rx = rx;
        this.tx = tx;
        this.fill = fill;
        this.completion = completion;
        this.rxConsumer = rx.consumer();
        this.txProducer = tx.producer();
        this.fillProducer = fill.producer();
        this.completionConsumer = completion.consumer();
    }

    /** A socket that registers {@code umem} and binds to queue {@code queue} of {@code ifindex} (copy mode). */
    public static XskSocket open(final Umem umem, final int ifindex, final int queue, final int ringSize,
        final String where) throws IOException
    {
        return open(umem, ifindex, queue, ringSize, where, -1);
    }

    /** A socket on another interface that shares {@code first}'s UMEM, with fill and completion rings of its own. */
    public static XskSocket sharing(final XskSocket first, final int ifindex, final int queue, final int ringSize,
        final String where) throws IOException
    {
        return open(first.umem, ifindex, queue, ringSize, where, first.fd);
    }

    private static XskSocket open(final Umem umem, final int ifindex, final int queue, final int ringSize,
        final String where, final int sharedFd) throws IOException
    {
        if (Integer.bitCount(ringSize) != 1)
        {
            throw new IllegalArgumentException("ring size must be a power of two, was " + ringSize);
        }
        final int fd = socket(AF_XDP, SOCK_RAW, 0);
        if (fd < 0)
        {
            throw new IOException("socket(AF_XDP) for " + where + ": " + LibC.lastError() +
                " (the kernel needs CONFIG_XDP_SOCKETS)");
        }
        try
        {
            if (sharedFd < 0)
            {
                final Memory reg = new Memory(24);
                reg.clear();
                reg.setLong(0, Pointer.nativeValue(umem.base));
                reg.setLong(8, umem.length);
                reg.setInt(16, umem.chunkSize);
                opt(fd, XDP_UMEM_REG, reg, 24, "XDP_UMEM_REG", where);
            }
            final Memory n = new Memory(4);
            n.setInt(0, ringSize);
            opt(fd, XDP_UMEM_FILL_RING, n, 4, "XDP_UMEM_FILL_RING", where);
            opt(fd, XDP_UMEM_COMPLETION_RING, n, 4, "XDP_UMEM_COMPLETION_RING", where);
            opt(fd, XDP_RX_RING, n, 4, "XDP_RX_RING", where);
            opt(fd, XDP_TX_RING, n, 4, "XDP_TX_RING", where);
            final Memory off = new Memory(128);
            off.clear();
            final Memory len = new Memory(4);
            len.setInt(0, 128);
            if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, off, len) != 0)
            {
                throw new IOException("getsockopt(XDP_MMAP_OFFSETS) for " + where + ": " + LibC.lastError());
            }
            final ByteBuffer o = off.getByteBuffer(0, 128).order(ByteOrder.nativeOrder());
            final Ring rx = new Ring(fd, PGOFF_RX_RING, o, 0, ringSize, 16, "RX");
            final Ring tx = new Ring(fd, PGOFF_TX_RING, o, 32, ringSize, 16, "TX");
            final Ring fill = new Ring(fd, PGOFF_FILL_RING, o, 64, ringSize, 8, "fill");
            final Ring completion = new Ring(fd, PGOFF_COMPLETION_RING, o, 96, ringSize, 8, "completion");
            final Memory sxdp = new Memory(16);
            sxdp.clear();
            sxdp.setShort(0, (short)AF_XDP);
            // a socket that shares a UMEM may name no other flag (the kernel refuses): it inherits the mode
            sxdp.setShort(2, (short)(sharedFd >= 0 ? XDP_SHARED_UMEM : XDP_COPY));
            sxdp.setInt(4, ifindex);
            sxdp.setInt(8, queue);
            sxdp.setInt(12, Math.max(sharedFd, 0));
            if (bind(fd, sxdp, 16) != 0)
            {
                throw new IOException("bind(AF_XDP) to " + where + " (ifindex " + ifindex + ", queue " + queue + "): " +
                    LibC.lastError());
            }
            return new XskSocket(fd, where, umem, rx, tx, fill, completion);
        }
        catch (final IOException | RuntimeException ex)
        {
            close(fd);
            throw ex;
        }
    }

    /**
     * The socket's send buffer, forced past the system limit (CAP_NET_ADMIN): in copy mode every frame in flight
     * on the way out is charged to it, and a full one makes the kernel refuse to send (EAGAIN) until earlier
     * frames are freed downstream.
     */
    public void sendBuffer(final int bytes) throws IOException
    {
        final Memory v = new Memory(4);
        v.setInt(0, bytes);
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, v, 4) != 0)
        {
            throw new IOException("setsockopt(SO_SNDBUFFORCE " + bytes + ") for " + where + ": " + LibC.lastError());
        }
    }

    private static void opt(final int fd, final int name, final Memory value, final int len, final String what,
        final String where) throws IOException
    {
        if (setsockopt(fd, SOL_XDP, name, value, len) != 0)
        {
            throw new IOException("setsockopt(" + what + ") for " + where + ": " + LibC.lastError());
        }
    }

    public int fd()
    {
        return fd;
    }

    /** Gives the kernel up to {@code count} chunk addresses from {@code addrs} to receive into; returns how many. */
    public int fill(final long[] addrs, final int from, final int count)
    {
        final int free = fill.size - (fillProducer - fill.consumer());
        final int n = Math.min(free, count);
        for (int i = 0; i < n; i++)
        {
            fill.b.putLong(fill.slot(fillProducer + i), addrs[from + i]);
        }
        fillProducer += n;
        fill.producer(fillProducer);
        return n;
    }

    /** Received frames: calls {@code out} with each one's UMEM address and length; returns how many. */
    public int receive(final FrameSink out)
    {
        return receive(Integer.MAX_VALUE, out);
    }

    /** At most {@code max} received frames, as above; the rest stay in the RX ring. */
    public int receive(final int max, final FrameSink out)
    {
        final int n = Math.min(max, rx.producer() - rxConsumer);
        for (int i = 0; i < n; i++)
        {
            final int s = rx.slot(rxConsumer + i);
            out.frame(rx.b.getLong(s), rx.b.getInt(s + 8));
        }
        rxConsumer += n;
        rx.consumer(rxConsumer);
        return n;
    }

    /** Receives one frame's place in the UMEM. */
    public interface FrameSink
    {
        void frame(long addr, int len);
    }

    /** Frames published to the TX ring that the kernel has not taken yet. */
    public int txPending()
    {
        return txProducer - tx.consumer();
    }

    /** Free TX slots now. */
    public int txFree()
    {
        return tx.size - (txProducer - tx.consumer());
    }

    /** Queues one frame (already in the UMEM) for sending; false if the TX ring is full. No system call. */
    public boolean queue(final long addr, final int len)
    {
        if (txProducer - tx.consumer() >= tx.size)
        {
            return false;
        }
        final int s = tx.slot(txProducer);
        tx.b.putLong(s, addr);
        tx.b.putInt(s + 8, len);
        tx.b.putInt(s + 12, 0);
        txProducer++;
        return true;
    }

    /** Publishes the queued frames and asks the kernel to send them: one system call for all of them. */
    public void kick() throws IOException
    {
        tx.producer(txProducer);
        kicks++;
        if (sendto(fd, null, 0, MSG_DONTWAIT, null, 0).longValue() < 0)
        {
            final int errno = Native.getLastError();
            if (errno != 11 && errno != 105 && errno != 16) // EAGAIN, ENOBUFS, EBUSY: the kernel sends on
            {
                throw new IOException("sendto(AF_XDP " + where + "): " + LibC.lastError());
            }
        }
    }

    /** Sent frames whose chunks are free again: calls {@code out} with each address; returns how many. */
    public int completed(final LongConsumer out)
    {
        final int n = completion.producer() - completionConsumer;
        for (int i = 0; i < n; i++)
        {
            out.accept(completion.b.getLong(completion.slot(completionConsumer + i)));
        }
        completionConsumer += n;
        completion.consumer(completionConsumer);
        return n;
    }

    /** The kernel's drop counters: rx_dropped, rx_invalid_descs, tx_invalid_descs, rx_ring_full, fill ring empty, tx ring empty. */
    public long[] statistics() throws IOException
    {
        final Memory st = new Memory(48);
        st.clear();
        final Memory len = new Memory(4);
        len.setInt(0, 48);
        if (getsockopt(fd, SOL_XDP, XDP_STATISTICS, st, len) != 0)
        {
            throw new IOException("getsockopt(XDP_STATISTICS) for " + where + ": " + LibC.lastError());
        }
        final long[] out = new long[6];
        for (int i = 0; i < 6; i++)
        {
            out[i] = st.getLong(8L * i);
        }
        return out;
    }

    /** Unmaps the rings and closes the socket (the kernel removes it from any XSKMAP). The UMEM stays. */
    @Override
    public void close()
    {
        rx.unmap();
        tx.unmap();
        fill.unmap();
        completion.unmap();
        close(fd);
    }
}
