package dev.colod.netfilter;

import dev.colod.buffer.NicStats;
import dev.colod.buffer.OutputCommitNic;
import dev.colod.buffer.net.Netns;
import io.netty.channel.IoEvent;
import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.epoll.EpollIoHandle;
import io.netty.channel.epoll.EpollIoOps;
import io.netty.channel.unix.FileDescriptor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Output commit in the kernel for one NIC: the guest's frames wait in NFQUEUE {@code queue} (steered there by
 * {@link NfqueueRules}); this process sees only their packet ids (copy mode META) and lets a whole epoch out
 * with one {@code NFQNL_MSG_VERDICT_BATCH} (accept every id up to the epoch's last). Fail-closed unless
 * configured otherwise: with no listener the kernel drops queued frames instead of letting them out.
 * Non-IP frames (ARP) do not pass iptables and are not held by this backend.
 * <p>
 * Runs on one Netty epoll event loop like {@code TapNic}; engine calls are handed over to it.
 */
public final class NfqueueNic implements OutputCommitNic
{
    private static final Logger LOG = LoggerFactory.getLogger(NfqueueNic.class);
    private static final int MAX_SEALED = 1024;

    private enum Mode
    {
        PASS_THROUGH, HOLD, FENCED
    }

    private final String name;
    private final int queue;
    private final String netns;
    private final IoEventLoop loop;
    private final int fd;
    private final FileDescriptor channel;
    private final ByteBuffer rx = NfqueueCodec.buffer(1 << 16);
    private final ByteBuffer tx = NfqueueCodec.buffer(256);
    private final long[] sealedEpoch = new long[MAX_SEALED];
    private final long[] sealedMaxId = new long[MAX_SEALED];
    private final long[] sealedCount = new long[MAX_SEALED];
    private int sealedHead;
    private int sealedCount0;
    private int seq = 1;
    private IoRegistration reg;
    private Mode mode = Mode.PASS_THROUGH;
    private long maxSeenId;
    private long openCount;
    private volatile long heldFrames;
    private volatile long oldestHeldNanos;
    private volatile long releasedFrames;
    private volatile long passedFrames;
    private volatile long droppedFenced;
    private volatile long netlinkErrors;
    private volatile List<NicStats.EpochStats> epochView = List.of();

    private NfqueueNic(final String name, final int queue, final String netns, final IoEventLoop loop, final int fd)
    {
        this.name = name;
        this.queue = queue;
        this.netns = netns;
        this.loop = loop;
        this.fd = fd;
        this.channel = new FileDescriptor(fd);
    }

    /**
     * Binds queue {@code queue} in network namespace {@code netns} (null: this process's) with copy mode META,
     * the given maximum length and fail-open or fail-closed, checking the kernel's ack of every step.
     */
    public static NfqueueNic open(final String name, final int queue, final int maxLen, final boolean failOpen,
        final String netns, final IoEventLoop loop) throws IOException
    {
        io.netty.channel.epoll.Epoll.ensureAvailability();
        final int fd = netns == null ? Netlink.open() : Netns.call(netns, Netlink::open);
        final NfqueueNic n = new NfqueueNic(name, queue, netns, loop, fd);
        try
        {
            n.config("bind queue " + queue, b -> NfqueueCodec.attr(b, NfqueueCodec.CFG_CMD, NfqueueCodec.cmd(NfqueueCodec.CMD_BIND)));
            n.config("copy mode META", b -> NfqueueCodec.attr(b, NfqueueCodec.CFG_PARAMS,
                NfqueueCodec.params(0, NfqueueCodec.COPY_META)));
            n.config("queue max length " + maxLen, b -> NfqueueCodec.attr(b, NfqueueCodec.CFG_QUEUE_MAXLEN,
                NfqueueCodec.be32(maxLen)));
            n.config(failOpen ? "fail-open" : "fail-closed", b ->
            {
                NfqueueCodec.attr(b, NfqueueCodec.CFG_MASK, NfqueueCodec.be32(NfqueueCodec.CFG_F_FAIL_OPEN));
                NfqueueCodec.attr(b, NfqueueCodec.CFG_FLAGS, NfqueueCodec.be32(failOpen ? NfqueueCodec.CFG_F_FAIL_OPEN : 0));
            });
            n.reg = loop.register(new EpollIoHandle()
            {
                @Override
                public FileDescriptor fd()
                {
                    return n.channel;
                }

                @Override
                public void handle(final IoRegistration registration, final IoEvent event)
                {
                    n.onReadable();
                }

                @Override
                public void close()
                {
                }
            }).get(5, TimeUnit.SECONDS);
            n.reg.submit(EpollIoOps.EPOLLIN);
            LOG.info("nic {}: NFQUEUE {} bound ({}, max {} frames)", name, queue, failOpen ? "fail-open" : "fail-closed", maxLen);
            return n;
        }
        catch (final Exception ex)
        {
            Netlink.close(fd);
            throw new IOException("NFQUEUE " + queue + " for " + name + ": " + ex.getMessage(), ex);
        }
    }

    private interface Attrs
    {
        void put(ByteBuffer b);
    }

    /** Sends one CONFIG message with an ack request and waits (2 s) for the kernel's answer. */
    private void config(final String what, final Attrs attrs) throws IOException
    {
        final int s = seq++;
        tx.clear();
        final int start = NfqueueCodec.begin(tx, NfqueueCodec.MSG_CONFIG, NfqueueCodec.NLM_F_REQUEST | NfqueueCodec.NLM_F_ACK,
            s, queue);
        attrs.put(tx);
        NfqueueCodec.end(tx, start);
        send();
        final long deadline = System.nanoTime() + 2_000_000_000L;
        while (System.nanoTime() - deadline < 0)
        {
            rx.clear();
            final int n = channel.read(rx, 0, rx.capacity());
            if (n <= 0)
            {
                Thread.onSpinWait();
                continue;
            }
            for (int off = 0; off + 16 <= n; )
            {
                final int len = rx.getInt(off);
                final int type = rx.getShort(off + 4) & 0xffff;
                if (type == NfqueueCodec.NLMSG_ERROR && rx.getInt(off + 8) == s)
                {
                    final int err = rx.getInt(off + 16);
                    if (err != 0)
                    {
                        throw new IOException("NFQNL_MSG_CONFIG (" + what + ") refused by the kernel: errno " + (-err));
                    }
                    return;
                }
                off += Math.max(16, (len + 3) & ~3);
            }
        }
        throw new IOException("no ack from the kernel for NFQNL_MSG_CONFIG (" + what + ") within 2 s");
    }

    private void send() throws IOException
    {
        final int n = channel.write(tx, 0, tx.position());
        if (n != tx.position())
        {
            throw new IOException("netlink send of " + tx.position() + " bytes wrote " + n);
        }
    }

    private void verdictBatch(final int verdict, final long uptoId)
    {
        try
        {
            tx.clear();
            final int start = NfqueueCodec.begin(tx, NfqueueCodec.MSG_VERDICT_BATCH, NfqueueCodec.NLM_F_REQUEST, seq++, queue);
            NfqueueCodec.attr(tx, NfqueueCodec.ATTR_VERDICT_HDR, NfqueueCodec.verdictHdr(verdict, (int)uptoId));
            NfqueueCodec.end(tx, start);
            send();
        }
        catch (final IOException ex)
        {
            netlinkErrors++;
            LOG.error("nic={} NFQNL_MSG_VERDICT_BATCH ({} up to id {}) failed: {}", name,
                verdict == NfqueueCodec.NF_ACCEPT ? "accept" : "drop", uptoId, ex.toString());
        }
    }

    private void onReadable()
    {
        for (int round = 0; round < 64; round++)
        {
            final int n;
            try
            {
                n = channel.read(rx.clear(), 0, rx.capacity());
            }
            catch (final IOException ex)
            {
                netlinkErrors++;
                LOG.warn("nic={} netlink read failed: {}", name, ex.toString());
                return;
            }
            if (n <= 0)
            {
                return;
            }
            for (int off = 0; off + 16 <= n; )
            {
                final int len = rx.getInt(off);
                if (len < 16 || off + len > n)
                {
                    break;
                }
                final int type = rx.getShort(off + 4) & 0xffff;
                if (type == ((NfqueueCodec.SUBSYS_QUEUE << 8) | NfqueueCodec.MSG_PACKET))
                {
                    onPacket(off, len);
                }
                else if (type == NfqueueCodec.NLMSG_ERROR && rx.getInt(off + 16) != 0)
                {
                    netlinkErrors++;
                    LOG.warn("nic={} netlink error errno {} for message seq {}", name, -rx.getInt(off + 16), rx.getInt(off + 8));
                }
                off += (len + 3) & ~3;
            }
        }
    }

    private void onPacket(final int off, final int len)
    {
        // nlmsghdr 16 + nfgenmsg 4, then attributes
        for (int a = off + 20; a + 4 <= off + len; )
        {
            final int alen = rx.getShort(a) & 0xffff;
            final int atype = rx.getShort(a + 2) & 0x7fff;
            if (alen < 4)
            {
                return;
            }
            if (atype == NfqueueCodec.ATTR_PACKET_HDR && alen >= 4 + 4)
            {
                final long id = rx.order(ByteOrder.BIG_ENDIAN).getInt(a + 4) & 0xffffffffL;
                rx.order(ByteOrder.nativeOrder());
                onPacketId(id);
                return;
            }
            a += (alen + 3) & ~3;
        }
    }

    private void onPacketId(final long id)
    {
        maxSeenId = Math.max(maxSeenId, id);
        switch (mode)
        {
            case HOLD:
                if (heldFrames == 0)
                {
                    oldestHeldNanos = System.nanoTime();
                }
                heldFrames++;
                openCount++;
                break;
            case PASS_THROUGH:
                verdictBatch(NfqueueCodec.NF_ACCEPT, id);
                passedFrames++;
                break;
            default:
                verdictBatch(NfqueueCodec.NF_DROP, id);
                droppedFenced++;
        }
    }

    private void run(final Runnable r)
    {
        dev.colod.buffer.TapNic.runOnLoop(loop, name, r);
    }

    @Override
    public String name()
    {
        return name;
    }

    @Override
    public void hold()
    {
        run(() -> mode = Mode.HOLD);
    }

    @Override
    public void seal(final long epoch)
    {
        run(() ->
        {
            onReadable(); // ids already delivered to the socket were sent before the pause: they are this epoch's
            final int i = (sealedHead + sealedCount0) % MAX_SEALED;
            sealedEpoch[i] = epoch;
            sealedMaxId[i] = maxSeenId;
            sealedCount[i] = openCount;
            openCount = 0;
            sealedCount0++;
            publish();
        });
    }

    @Override
    public void release(final long epoch)
    {
        loop.execute(() ->
        {
            long upto = -1;
            long frames = 0;
            while (sealedCount0 > 0 && sealedEpoch[sealedHead] <= epoch)
            {
                upto = sealedMaxId[sealedHead];
                frames += sealedCount[sealedHead];
                sealedHead = (sealedHead + 1) % MAX_SEALED;
                sealedCount0--;
            }
            if (frames > 0)
            {
                verdictBatch(NfqueueCodec.NF_ACCEPT, upto);
                releasedFrames += frames;
                heldFrames -= frames;
                oldestHeldNanos = heldFrames == 0 ? 0 : System.nanoTime();
            }
            publish();
        });
    }

    @Override
    public void releaseAllAndPass()
    {
        run(() ->
        {
            if (heldFrames > 0)
            {
                verdictBatch(NfqueueCodec.NF_ACCEPT, maxSeenId);
                releasedFrames += heldFrames;
            }
            clearHeld();
            mode = Mode.PASS_THROUGH;
        });
    }

    @Override
    public void fence()
    {
        run(() ->
        {
            if (heldFrames > 0)
            {
                verdictBatch(NfqueueCodec.NF_DROP, maxSeenId);
                droppedFenced += heldFrames;
            }
            clearHeld();
            mode = Mode.FENCED;
        });
    }

    private void clearHeld()
    {
        heldFrames = 0;
        openCount = 0;
        sealedCount0 = 0;
        oldestHeldNanos = 0;
        publish();
    }

    private void publish()
    {
        final List<NicStats.EpochStats> v = new ArrayList<>();
        for (int k = 0; k < sealedCount0; k++)
        {
            final int i = (sealedHead + k) % MAX_SEALED;
            v.add(new NicStats.EpochStats(sealedEpoch[i], sealedCount[i], 0));
        }
        epochView = List.copyOf(v);
    }

    private volatile long[] kernelCache;
    private volatile long kernelCacheNanos;

    /** The kernel's counters, read at most every 100 ms (reading /proc in another namespace costs a thread). */
    private long[] cachedKernelCounters()
    {
        final long now = System.nanoTime();
        if (kernelCache == null || now - kernelCacheNanos > 100_000_000L)
        {
            kernelCache = kernelCounters();
            kernelCacheNanos = now;
        }
        return kernelCache;
    }

    /** The kernel's own counters of this queue: {queue_total, queue_dropped, user_dropped}, or null. */
    public long[] kernelCounters()
    {
        try
        {
            final String text = netns == null ? Files.readString(Path.of("/proc/net/netfilter/nfnetlink_queue"))
                : Netns.call(netns, () -> Files.readString(Path.of("/proc/thread-self/net/netfilter/nfnetlink_queue")));
            for (final String line : text.split("\n"))
            {
                final String[] f = line.trim().split("\\s+");
                if (f.length >= 8 && Integer.parseInt(f[0]) == queue)
                {
                    return new long[]{Long.parseLong(f[2]), Long.parseLong(f[5]), Long.parseLong(f[6])};
                }
            }
        }
        catch (final IOException | RuntimeException ex)
        {
            LOG.debug("nic={} cannot read nfnetlink_queue: {}", name, ex.toString());
        }
        return null;
    }

    /** Byte counts are not known in copy mode META: the held-bytes fields are 0 for this backend. */
    @Override
    public NicStats stats()
    {
        final long held = heldFrames;
        final List<NicStats.EpochStats> all = NicStats.withOpenEpoch(epochView, held, 0);
        final long[] k = cachedKernelCounters();
        final long oldest = oldestHeldNanos;
        return new NicStats(name, mode.name().toLowerCase().replace('_', '-'), held, 0,
            held == 0 || oldest == 0 ? 0 : System.nanoTime() - oldest, all, releasedFrames, 0, passedFrames, 0, 0,
            k == null ? 0 : k[1], 0, 0, droppedFenced, netlinkErrors + (k == null ? 0 : k[2]), 0, 0);
    }

    @Override
    public void close()
    {
        try
        {
            run(() ->
            {
                if (reg != null)
                {
                    reg.cancel();
                }
            });
        }
        catch (final RuntimeException ex)
        {
            LOG.warn("nic={} unregistering: {}", name, ex.toString());
        }
        Netlink.close(fd);
    }
}
