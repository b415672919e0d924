package dev.colod.netfilter;

import dev.colod.buffer.Backend;
import dev.colod.buffer.FrameLedger;
import dev.colod.os.Netlink;
import dev.colod.os.Netns;
import io.netty.channel.IoRegistration;
import io.netty.channel.unix.FileDescriptor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Output commit in the kernel for one NIC: the guest's frames wait in NFQUEUE {@code queue} (steered there by
 * {@link NfqueueRules}); this process sees only their packet ids (copy mode META) and lets a whole epoch out
 * with one {@code NFQNL_MSG_VERDICT_BATCH} (accept every id up to the epoch's last). The queue's length is the
 * ledger's {@code max-frames}; beyond it the kernel drops (counted as limit-frames, from its own counter).
 * Fail-closed unless configured otherwise: with no listener the kernel drops queued frames instead of letting
 * them out. Non-IP frames (ARP) do not pass iptables and are not held by this backend.
 * <p>
 * A mark is a packet id. Runs on the ledger's loop.
 */
public final class NfqueueBackend implements Backend
{
    private static final Logger LOG = LoggerFactory.getLogger(NfqueueBackend.class);

    private final FrameLedger ledger;
    private final String name;
    private final int queue;
    private final String netns;
    private final int fd;
    private final FileDescriptor channel;
    private final ByteBuffer rx = NfqueueCodec.buffer(1 << 16);
    private final ByteBuffer tx = NfqueueCodec.buffer(256);
    private int seq = 1;
    private IoRegistration reg;
    private long maxSeenId;
    private volatile long netlinkErrors;
    private volatile KernelDrops kernelCache = KernelDrops.NONE;
    private volatile long kernelCacheNanos;

    private NfqueueBackend(final FrameLedger ledger, final int queue, final String netns, final int fd)
    {
        this.ledger = ledger;
        this.name = ledger.name();
        this.queue = queue;
        this.netns = netns;
        this.fd = fd;
        this.channel = new FileDescriptor(fd);
    }

    /**
     * A backend bound to queue {@code queue} in network namespace {@code netns} (null: this process's) with copy
     * mode META, the ledger's max-frames as queue length, and fail-open or fail-closed, checking the kernel's ack
     * of every step.
     */
    public static Backend.Factory on(final int queue, final boolean failOpen, final String netns)
    {
        return ledger -> open(ledger, queue, failOpen, netns);
    }

    private static NfqueueBackend open(final FrameLedger ledger, final int queue, final boolean failOpen,
        final String netns) throws IOException
    {
        io.netty.channel.epoll.Epoll.ensureAvailability();
        final int maxLen = ledger.limits().maxFrames();
        final int fd = netns == null ? Netlink.open() : Netns.call(netns, Netlink::open);
        final NfqueueBackend n = new NfqueueBackend(ledger, queue, netns, fd);
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
            n.reg = ledger.loop().register(n.channel, n::onReadable);
            LOG.info("nic {}: NFQUEUE {} bound ({}, max {} frames)", ledger.name(), queue,
                failOpen ? "fail-open" : "fail-closed", maxLen);
            return n;
        }
        catch (final Exception ex)
        {
            Netlink.close(fd);
            throw new IOException("NFQUEUE " + queue + " for " + ledger.name() + ": " + ex.getMessage(), ex);
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

    /** One verdict for every queued id up to {@code uptoId}; false (logged, counted) if netlink refused it. */
    private boolean verdictBatch(final int verdict, final long uptoId)
    {
        try
        {
            tx.clear();
            final int start = NfqueueCodec.begin(tx, NfqueueCodec.MSG_VERDICT_BATCH, NfqueueCodec.NLM_F_REQUEST, seq++, queue);
            NfqueueCodec.attr(tx, NfqueueCodec.ATTR_VERDICT_HDR, NfqueueCodec.verdictHdr(verdict, (int)uptoId));
            NfqueueCodec.end(tx, start);
            send();
            return true;
        }
        catch (final IOException ex)
        {
            netlinkErrors++;
            LOG.error("nic={} NFQNL_MSG_VERDICT_BATCH ({} up to id {}) failed: {}", name,
                verdict == NfqueueCodec.NF_ACCEPT ? "accept" : "drop", uptoId, ex.toString());
            return false;
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
        switch (ledger.mode())
        {
            case HOLD:
                ledger.held(0, System.nanoTime()); // META mode: the length is not known here
                break;
            case PASS_THROUGH:
                verdictBatch(NfqueueCodec.NF_ACCEPT, id);
                ledger.passed();
                break;
            default:
                verdictBatch(NfqueueCodec.NF_DROP, id);
                ledger.dropped(FrameLedger.Drop.FENCED);
        }
    }

    @Override
    public long mark()
    {
        onReadable(); // ids already delivered to the socket were sent before the pause: they belong to the epoch
        return maxSeenId;
    }

    @Override
    public int letGo(final long mark)
    {
        return verdictBatch(NfqueueCodec.NF_ACCEPT, mark) ? 0 : 1;
    }

    @Override
    public void drop(final long mark)
    {
        verdictBatch(NfqueueCodec.NF_DROP, mark);
    }

    /** The kernel's drops of this queue (queue full; failed to reach us), read at most every 100 ms. */
    @Override
    public KernelDrops kernelDrops()
    {
        final long now = System.nanoTime();
        if (now - kernelCacheNanos > 100_000_000L)
        {
            final long[] k = kernelCounters();
            kernelCache = k == null ? new KernelDrops(0, netlinkErrors) : new KernelDrops(k[1], k[2] + netlinkErrors);
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

    @Override
    public void close()
    {
        ledger.loop().cancel(reg);
        Netlink.close(fd);
    }
}
