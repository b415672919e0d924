package dev.colod.agent.disk;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * The smallest NBD client colod needs, to ask QEMU's own NBD server which blocks a dirty bitmap marks or which
 * are allocated, and to read and write a disk through QEMU's block layer (a qcow2 image) (the NBD protocol, "fixed newstyle" negotiation, structured replies and
 * {@code NBD_CMD_BLOCK_STATUS} with meta contexts such as {@code qemu:dirty-bitmap:NAME} and
 * {@code base:allocation}). One request at a time on a unix socket; not thread-safe. Big-endian throughout.
 * Every malformed answer is an {@link IOException} that names the export and what was wrong.
 */
public final class NbdClient implements AutoCloseable
{
    private static final long NBDMAGIC = 0x4e42444d41474943L;
    private static final long IHAVEOPT = 0x49484156454F5054L;
    private static final long OPT_REPLY_MAGIC = 0x3e889045565a9L;
    private static final int REQUEST_MAGIC = 0x25609513;
    private static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;
    private static final int FLAG_FIXED_NEWSTYLE = 1;
    private static final int FLAG_NO_ZEROES = 2;
    private static final int OPT_GO = 7;
    private static final int OPT_STRUCTURED_REPLY = 8;
    private static final int OPT_SET_META_CONTEXT = 10;
    private static final int REP_ACK = 1;
    private static final int REP_INFO = 3;
    private static final int REP_META_CONTEXT = 4;
    private static final int CMD_READ = 0;
    private static final int CMD_WRITE = 1;
    private static final int CMD_DISC = 2;
    private static final int CMD_FLUSH = 3;
    private static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    private static final int CHUNK_OFFSET_DATA = 1;
    private static final int CHUNK_OFFSET_HOLE = 2;
    private static final int CMD_BLOCK_STATUS = 7;
    private static final int REPLY_FLAG_DONE = 1;
    private static final int CHUNK_NONE = 0;
    private static final int CHUNK_BLOCK_STATUS = 5;
    private static final int CHUNK_ERROR_BIT = 1 << 15;
    /** Largest single status request. */
    public static final int MAX_REQUEST = 32 << 20;
    /** Flag bit 0 of {@code qemu:dirty-bitmap:*}: the extent is dirty. */
    public static final int STATE_DIRTY = 1;
    /** Flag bits of {@code base:allocation}: the extent is a hole / reads as zeros. */
    public static final int STATE_HOLE = 1;
    public static final int STATE_ZERO = 2;

    /** A run of bytes with one status. */
    public record Extent(long offset, long length, int flags)
    {
    }

    private final SocketChannel ch;
    private final String export;
    private final long size;
    private final Map<String, Integer> contexts;
    private final ByteBuffer head = ByteBuffer.allocate(32);
    private long cookie;
    /** Writes and flushes sent and not yet answered, by cookie: what each was. */
    private final Map<Long, String> inFlight = new LinkedHashMap<>();
    /** Writes in flight at most (QEMU's server reads 16 requests ahead; the answers are 16-20 bytes each). */
    private static final int MAX_IN_FLIGHT = 16;

    private NbdClient(final SocketChannel ch, final String export, final long size, final Map<String, Integer> contexts)
    {
        this.ch = ch;
        this.export = export;
        this.size = size;
        this.contexts = contexts;
    }

    /** Connects to {@code socket}, negotiates structured replies and {@code metaContexts}, and opens {@code export}. */
    public static NbdClient connect(final Path socket, final String export, final List<String> metaContexts)
        throws IOException
    {
        final SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try
        {
            ch.connect(UnixDomainSocketAddress.of(socket));
            final String what = "NBD export '" + export + "' at " + socket;
            final ByteBuffer greet = readFully(ch, 18, what);
            if (greet.getLong(0) != NBDMAGIC || greet.getLong(8) != IHAVEOPT)
            {
                throw new IOException(what + ": not a newstyle NBD server (bad magic)");
            }
            if ((greet.getShort(16) & FLAG_FIXED_NEWSTYLE) == 0)
            {
                throw new IOException(what + ": server does not speak fixed newstyle");
            }
            writeFully(ch, ByteBuffer.allocate(4).putInt(FLAG_FIXED_NEWSTYLE | (greet.getShort(16) & FLAG_NO_ZEROES)).flip());

            option(ch, OPT_STRUCTURED_REPLY, ByteBuffer.allocate(0), what);
            expectAck(ch, OPT_STRUCTURED_REPLY, what, null);

            final byte[] name = export.getBytes(StandardCharsets.UTF_8);
            final Map<String, Integer> ids = new LinkedHashMap<>();
            if (!metaContexts.isEmpty())
            {
                int len = 4 + name.length + 4;
                for (final String q : metaContexts)
                {
                    len += 4 + q.getBytes(StandardCharsets.UTF_8).length;
                }
                final ByteBuffer b = ByteBuffer.allocate(len).putInt(name.length).put(name).putInt(metaContexts.size());
                for (final String q : metaContexts)
                {
                    final byte[] qb = q.getBytes(StandardCharsets.UTF_8);
                    b.putInt(qb.length).put(qb);
                }
                option(ch, OPT_SET_META_CONTEXT, b.flip(), what);
                expectAck(ch, OPT_SET_META_CONTEXT, what, ids);
                for (final String q : metaContexts)
                {
                    if (!ids.containsKey(q))
                    {
                        throw new IOException(what + ": server does not offer meta context " + q);
                    }
                }
            }
            option(ch, OPT_GO, ByteBuffer.allocate(4 + name.length + 2).putInt(name.length).put(name).putShort((short)0)
                .flip(), what);
            final long[] exportSize = {-1};
            expectGo(ch, what, exportSize);
            return new NbdClient(ch, export, exportSize[0], ids);
        }
        catch (final IOException | RuntimeException ex)
        {
            ch.close();
            throw ex;
        }
    }

    /** The export's size in bytes. */
    public long size()
    {
        return size;
    }

    /**
     * The extents of meta context {@code context} in [{@code offset}, {@code offset + length}), merged where
     * neighbours share flags, passed to {@code out} in order. Asks as often as the server answers short.
     */
    public void blockStatus(final String context, final long offset, final long length,
        final Consumer<Extent> out) throws IOException
    {
        final Integer id = contexts.get(context);
        if (id == null)
        {
            throw new IllegalArgumentException("meta context " + context + " was not negotiated");
        }
        final long end = offset + length;
        long at = offset;
        Extent pending = null;
        while (at < end)
        {
            final int ask = (int)Math.min(MAX_REQUEST, end - at);
            final long c = request(CMD_BLOCK_STATUS, at, ask);
            long covered = 0;
            boolean done = false;
            while (!done)
            {
                final ByteBuffer h = readFully(ch, 20, export);
                final int type = checkChunk(h, c);
                done = (h.getShort(4) & REPLY_FLAG_DONE) != 0;
                final int len = h.getInt(16);
                final ByteBuffer p = readFully(ch, len, export);
                if ((type & CHUNK_ERROR_BIT) != 0)
                {
                    throw chunkError(p, "block status at " + at);
                }
                if (type == CHUNK_NONE)
                {
                    continue;
                }
                if (type != CHUNK_BLOCK_STATUS || len < 12 || (len - 4) % 8 != 0)
                {
                    throw new IOException(export + ": unexpected reply chunk type " + type + " of " + len + " bytes to block status");
                }
                if (p.getInt(0) != id)
                {
                    continue; // another negotiated context; we asked for all
                }
                for (int k = 4; k < len; k += 8)
                {
                    final long el = Integer.toUnsignedLong(p.getInt(k));
                    final int flags = p.getInt(k + 4);
                    final long from = at + covered;
                    final long n = Math.min(el, end - from);
                    if (n <= 0)
                    {
                        break;
                    }
                    if (pending != null && pending.flags() == flags && pending.offset() + pending.length() == from)
                    {
                        pending = new Extent(pending.offset(), pending.length() + n, flags);
                    }
                    else
                    {
                        if (pending != null)
                        {
                            out.accept(pending);
                        }
                        pending = new Extent(from, n, flags);
                    }
                    covered += n;
                }
            }
            if (covered == 0)
            {
                throw new IOException(export + ": block status at " + at + " described no bytes");
            }
            at += covered;
        }
        if (pending != null)
        {
            out.accept(pending);
        }
    }

    /**
     * Reads exactly {@code length} bytes at {@code offset} into {@code dst} at its position (advanced), as structured
     * reply chunks (data and holes, in any order) that must cover the range exactly once.
     */
    public void read(final long offset, final int length, final ByteBuffer dst) throws IOException
    {
        if (length <= 0 || length > MAX_REQUEST || offset < 0 || offset > size - length)
        {
            throw new IllegalArgumentException(export + ": read [" + offset + ", +" + length + ") of a " + size + "-byte export");
        }
        final int base = dst.position();
        final long c = request(CMD_READ, offset, length);
        long covered = 0;
        boolean done = false;
        while (!done)
        {
            final ByteBuffer h = readFully(ch, 20, export);
            final int type = checkChunk(h, c);
            done = (h.getShort(4) & REPLY_FLAG_DONE) != 0;
            final int len = h.getInt(16);
            if (type == CHUNK_OFFSET_DATA)
            {
                final long at = readFully(ch, 8, export).getLong(0) - offset;
                final int n = len - 8;
                if (len < 8 || at < 0 || at + n > length)
                {
                    throw new IOException(export + ": read reply data [" + (offset + at) + ", +" + n + ") outside the request");
                }
                readInto(ch, dst.duplicate().position(base + (int)at).limit(base + (int)at + n), export);
                covered += n;
                continue;
            }
            final ByteBuffer p = readFully(ch, len, export);
            if ((type & CHUNK_ERROR_BIT) != 0)
            {
                throw chunkError(p, "read of [" + offset + ", +" + length + ")");
            }
            if (type == CHUNK_OFFSET_HOLE)
            {
                final long at = p.getLong(0) - offset;
                final int n = p.getInt(8);
                if (len != 12 || at < 0 || at + n > length)
                {
                    throw new IOException(export + ": read reply hole outside the request");
                }
                for (int k = 0; k < n; k++)
                {
                    dst.put(base + (int)at + k, (byte)0);
                }
                covered += n;
            }
            else if (type != CHUNK_NONE)
            {
                throw new IOException(export + ": unexpected reply chunk type " + type + " to a read");
            }
        }
        if (covered != length)
        {
            throw new IOException(export + ": read of [" + offset + ", +" + length + ") answered " + covered + " bytes");
        }
        dst.position(base + length);
    }

    /**
     * Sends a write of {@code src}'s remaining bytes (consumed: they are on the socket when this returns) at
     * {@code offset} without waiting for its answer; {@link #awaitWrites} or {@link #flush} collects the answers
     * (at most {@value #MAX_IN_FLIGHT} are outstanding: one is collected before another is sent), and a failed
     * write throws there.
     */
    public void write(final long offset, final ByteBuffer src) throws IOException
    {
        final int n = src.remaining();
        if (n <= 0 || n > MAX_REQUEST || offset < 0 || offset > size - n)
        {
            throw new IllegalArgumentException(export + ": write [" + offset + ", +" + n + ") of a " + size + "-byte export");
        }
        if (inFlight.size() >= MAX_IN_FLIGHT)
        {
            collectOne();
        }
        final long c = request(CMD_WRITE, offset, n);
        inFlight.put(c, "write of [" + offset + ", +" + n + ")");
        writeFully(ch, src);
    }

    /** Waits for the answer to every write sent; the first that failed throws. */
    public void awaitWrites() throws IOException
    {
        while (!inFlight.isEmpty())
        {
            collectOne();
        }
    }

    /**
     * Waits for every write, then asks the server to make them durable (for qcow2: its metadata reaches the file)
     * and waits for that.
     */
    public void flush() throws IOException
    {
        awaitWrites();
        inFlight.put(request(CMD_FLUSH, 0, 0), "flush");
        awaitWrites();
    }

    /**
     * One answer to a command without data, to any outstanding cookie (a server may answer out of order): a
     * simple reply, or structured chunks ending in DONE; an error throws, naming the command.
     */
    private void collectOne() throws IOException
    {
        final ByteBuffer first = readFully(ch, 16, export);
        final long c = first.getLong(8);
        final String what = inFlight.remove(c);
        if (what == null)
        {
            throw new IOException(export + ": reply to cookie " + c + ", which is not outstanding");
        }
        if (first.getInt(0) == SIMPLE_REPLY_MAGIC)
        {
            if (first.getInt(4) != 0)
            {
                throw new IOException(export + ": " + what + " failed, error " + first.getInt(4));
            }
            return;
        }
        ByteBuffer h = ByteBuffer.allocate(20).put(first).put(readFully(ch, 4, export)).flip();
        while (true)
        {
            final int type = checkChunk(h, c);
            final ByteBuffer p = readFully(ch, h.getInt(16), export);
            if ((type & CHUNK_ERROR_BIT) != 0)
            {
                throw chunkError(p, what);
            }
            if ((h.getShort(4) & REPLY_FLAG_DONE) != 0)
            {
                return;
            }
            h = readFully(ch, 20, export);
        }
    }

    private int checkChunk(final ByteBuffer h, final long c) throws IOException
    {
        if (h.getInt(0) != STRUCTURED_REPLY_MAGIC)
        {
            throw new IOException(export + ": bad reply magic 0x" + Integer.toHexString(h.getInt(0)));
        }
        if (h.getLong(8) != c)
        {
            throw new IOException(export + ": reply to cookie " + h.getLong(8) + ", expected " + c);
        }
        return Short.toUnsignedInt(h.getShort(6));
    }

    private IOException chunkError(final ByteBuffer p, final String what)
    {
        final int err = p.remaining() >= 4 ? p.getInt(0) : -1;
        String msg = "";
        if (p.remaining() >= 6)
        {
            final int ml = Short.toUnsignedInt(p.getShort(4));
            if (6 + ml <= p.remaining())
            {
                msg = ": " + new String(p.array(), 6, ml, StandardCharsets.UTF_8);
            }
        }
        return new IOException(export + ": " + what + " failed, error " + err + msg);
    }

    private long request(final int type, final long offset, final int length) throws IOException
    {
        final long c = ++cookie;
        head.clear().putInt(REQUEST_MAGIC).putShort((short)0).putShort((short)type).putLong(c).putLong(offset)
            .putInt(length).flip();
        writeFully(ch, head);
        return c;
    }

    @Override
    public void close()
    {
        try
        {
            if (ch.isOpen())
            {
                request(CMD_DISC, 0, 0);
            }
        }
        catch (final IOException ignore)
        {
            // closing anyway
        }
        try
        {
            ch.close();
        }
        catch (final IOException ignore)
        {
            // nothing to do
        }
    }

    private static void option(final SocketChannel ch, final int opt, final ByteBuffer data, final String what)
        throws IOException
    {
        writeFully(ch, ByteBuffer.allocate(16 + data.remaining()).putLong(IHAVEOPT).putInt(opt).putInt(data.remaining())
            .put(data).flip());
    }

    /** Reads option replies until ACK; META_CONTEXT replies are collected into {@code ids}. */
    private static void expectAck(final SocketChannel ch, final int opt, final String what, final Map<String, Integer> ids)
        throws IOException
    {
        while (true)
        {
            final ByteBuffer h = optionReply(ch, opt, what);
            final int type = h.getInt(12);
            final ByteBuffer p = readFully(ch, h.getInt(16), what);
            if (type == REP_ACK)
            {
                return;
            }
            if (type == REP_META_CONTEXT && ids != null && p.remaining() >= 4)
            {
                ids.put(new String(p.array(), 4, p.remaining() - 4, StandardCharsets.UTF_8), p.getInt(0));
                continue;
            }
            throw optionError(opt, type, p, what);
        }
    }

    private static void expectGo(final SocketChannel ch, final String what, final long[] size) throws IOException
    {
        while (true)
        {
            final ByteBuffer h = optionReply(ch, OPT_GO, what);
            final int type = h.getInt(12);
            final ByteBuffer p = readFully(ch, h.getInt(16), what);
            if (type == REP_ACK)
            {
                if (size[0] < 0)
                {
                    throw new IOException(what + ": server did not say the export's size");
                }
                return;
            }
            if (type == REP_INFO)
            {
                if (p.remaining() >= 12 && p.getShort(0) == 0)
                {
                    size[0] = p.getLong(2);
                }
                continue;
            }
            throw optionError(OPT_GO, type, p, what);
        }
    }

    private static ByteBuffer optionReply(final SocketChannel ch, final int opt, final String what) throws IOException
    {
        final ByteBuffer h = readFully(ch, 20, what);
        if (h.getLong(0) != OPT_REPLY_MAGIC || h.getInt(8) != opt)
        {
            throw new IOException(what + ": bad reply to option " + opt);
        }
        if (h.getInt(16) < 0 || h.getInt(16) > 1 << 20)
        {
            throw new IOException(what + ": option reply of " + h.getInt(16) + " bytes");
        }
        return h;
    }

    private static IOException optionError(final int opt, final int type, final ByteBuffer p, final String what)
    {
        final String msg = new String(p.array(), 0, p.remaining(), StandardCharsets.UTF_8);
        return new IOException(what + ": option " + opt + " refused (reply 0x" + Integer.toHexString(type) + ")" +
            (msg.isEmpty() ? "" : ": " + msg));
    }

    private static ByteBuffer readFully(final SocketChannel ch, final int n, final String what) throws IOException
    {
        final ByteBuffer b = ByteBuffer.allocate(n);
        readInto(ch, b, what);
        return b.flip();
    }

    private static void readInto(final SocketChannel ch, final ByteBuffer b, final String what) throws IOException
    {
        while (b.hasRemaining())
        {
            if (ch.read(b) < 0)
            {
                throw new IOException(what + ": connection closed by the NBD server");
            }
        }
    }

    private static void writeFully(final SocketChannel ch, final ByteBuffer b) throws IOException
    {
        while (b.hasRemaining())
        {
            ch.write(b);
        }
    }
}
