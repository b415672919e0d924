package dev.colod.buffer;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * The output-commit contract, written once and run against every backend (TAP in packet-buffer, NFQUEUE in
 * netfilter) through its {@link EpochLedger}: frames are held until their epoch is released, then all leave in
 * order; epochs leave one at a time; inbound is never held; on protection loss everything held leaves and later
 * frames pass; once fenced, held and later frames are dropped and counted; at the frame limit extra frames are
 * dropped and counted, and the high-water mark asks for a checkpoint.
 */
public abstract class OutputCommitContract
{
    @TempDir
    protected Path runDir;

    /** A backend under test: its ledger, and what must be closed after it. */
    protected interface Installed extends AutoCloseable
    {
        EpochLedger nic();

        @Override
        void close();
    }

    /** Installs the backend on {@code lab}'s VM tap (vmA in the host namespace) with {@code limits}. */
    protected abstract Installed install(NetnsLab lab, BufferLimits limits) throws Exception;

    /** A backend made of {@code nic} and what must be closed after it, in this order. */
    protected static Installed installed(final EpochLedger nic, final AutoCloseable... after)
    {
        return new Installed()
        {
            @Override
            public EpochLedger nic()
            {
                return nic;
            }

            @Override
            public void close()
            {
                nic.close();
                for (final AutoCloseable c : after)
                {
                    try
                    {
                        c.close();
                    }
                    catch (final Exception ex)
                    {
                        System.err.println("cleanup: " + ex);
                    }
                }
            }
        };
    }

    /** Skips (printing why) when the backend cannot run here; fails instead when running as root. */
    protected void requireBackend()
    {
    }

    @BeforeEach
    void usable()
    {
        NetnsLab.requireUsable();
        requireBackend();
    }

    private Installed install(final NetnsLab lab) throws Exception
    {
        return install(lab, new BufferLimits().conclude());
    }

    private static DatagramSocket udp(final NetnsLab lab, final String ns, final String ip, final int port) throws Exception
    {
        return lab.in(ns, () ->
        {
            final DatagramSocket s = new DatagramSocket(new InetSocketAddress(InetAddress.getByName(ip), port));
            s.setSoTimeout(3_000);
            s.setReceiveBufferSize(4 << 20);
            return s;
        });
    }

    private static void send(final DatagramSocket s, final int seq, final String ip, final int port) throws Exception
    {
        final byte[] b = ByteBuffer.allocate(64).putInt(seq).array();
        s.send(new DatagramPacket(b, b.length, InetAddress.getByName(ip), port));
    }

    private static int receive(final DatagramSocket s) throws Exception
    {
        final DatagramPacket p = new DatagramPacket(new byte[2048], 2048);
        s.receive(p);
        return ByteBuffer.wrap(p.getData()).getInt();
    }

    private static void assertNothingArrives(final DatagramSocket s) throws Exception
    {
        s.setSoTimeout(250);
        try
        {
            throw new AssertionError("a held frame leaked out: seq " + receive(s));
        }
        catch (final SocketTimeoutException expected)
        {
            // nothing left while held
        }
        finally
        {
            s.setSoTimeout(3_000);
        }
    }

    @Test
    void holdsFramesUntilTheirEpochIsReleasedThenAllLeaveInOrder() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true); Installed b = install(lab))
        {
            final DatagramSocket guest = udp(lab, lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = udp(lab, lab.client, NetnsLab.CLIENT_IP, 9000);
            b.nic().hold(1);
            for (int i = 0; i < 100; i++)
            {
                send(guest, i, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> b.nic().stats().heldFrames() == 100);
            assertNothingArrives(client);
            b.nic().seal(1);
            b.nic().release(1);
            for (int i = 0; i < 100; i++)
            {
                assertThat(receive(client)).isEqualTo(i);
            }
            await().until(() -> b.nic().stats().releasedFrames() == 100);
            assertThat(b.nic().stats().heldFrames()).isZero();
        }
    }

    @Test
    void releasesOneEpochAtATime() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true); Installed b = install(lab))
        {
            final DatagramSocket guest = udp(lab, lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = udp(lab, lab.client, NetnsLab.CLIENT_IP, 9000);
            b.nic().hold(1);
            for (int i = 0; i < 10; i++)
            {
                send(guest, i, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> b.nic().stats().heldFrames() == 10);
            b.nic().seal(1);
            for (int i = 10; i < 15; i++)
            {
                send(guest, i, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> b.nic().stats().heldFrames() == 15);
            b.nic().release(1);
            for (int i = 0; i < 10; i++)
            {
                assertThat(receive(client)).isEqualTo(i);
            }
            assertNothingArrives(client);
            b.nic().seal(2);
            b.nic().release(2);
            for (int i = 10; i < 15; i++)
            {
                assertThat(receive(client)).isEqualTo(i);
            }
        }
    }

    @Test
    void inboundFramesAreNeverHeld() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true); Installed b = install(lab))
        {
            final DatagramSocket guest = udp(lab, lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = udp(lab, lab.client, NetnsLab.CLIENT_IP, 9000);
            b.nic().hold(1);
            send(guest, -1, NetnsLab.CLIENT_IP, 9000);
            await().until(() -> b.nic().stats().heldFrames() == 1);
            for (int i = 0; i < 50; i++)
            {
                send(client, i, NetnsLab.GUEST_IP, 7000);
                assertThat(receive(guest)).isEqualTo(i);
            }
            assertThat(b.nic().stats().heldFrames()).isEqualTo(1);
            assertNothingArrives(client);
        }
    }

    @Test
    void passThroughLetsEverythingHeldOutInOrderThenPassesLaterFrames() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true); Installed b = install(lab))
        {
            final DatagramSocket guest = udp(lab, lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = udp(lab, lab.client, NetnsLab.CLIENT_IP, 9000);
            b.nic().hold(1);
            for (int i = 0; i < 6; i++)
            {
                send(guest, i, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> b.nic().stats().heldFrames() == 6);
            b.nic().seal(1);
            for (int i = 6; i < 10; i++)
            {
                send(guest, i, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> b.nic().stats().heldFrames() == 10);
            assertNothingArrives(client);
            b.nic().passThrough("test: secondary gone");
            for (int i = 0; i < 10; i++)
            {
                assertThat(receive(client)).isEqualTo(i);
            }
            send(guest, 10, NetnsLab.CLIENT_IP, 9000);
            assertThat(receive(client)).isEqualTo(10);
            // the loop counts after its verdict or write, which may be after the client already has the frame
            await().until(() -> b.nic().stats().passedFrames() == 1);
            final NicStats s = b.nic().stats();
            assertThat(s.mode()).isEqualTo("pass-through");
            assertThat(s.heldFrames()).isZero();
            assertThat(s.releasedFrames()).isEqualTo(10);
            assertThat(s.droppedTotal()).isZero();
        }
    }

    @Test
    void fenceDropsWhatIsHeldAndEverythingAfterCounted() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true); Installed b = install(lab))
        {
            final DatagramSocket guest = udp(lab, lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = udp(lab, lab.client, NetnsLab.CLIENT_IP, 9000);
            b.nic().hold(1);
            for (int i = 0; i < 5; i++)
            {
                send(guest, i, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> b.nic().stats().heldFrames() == 5);
            b.nic().seal(1);
            b.nic().fence("test: secondary took over");
            assertThat(b.nic().stats().mode()).isEqualTo("fenced");
            assertThat(b.nic().stats().heldFrames()).isZero();
            b.nic().release(1); // a late release after the fence lets nothing out
            send(guest, 5, NetnsLab.CLIENT_IP, 9000);
            await().until(() -> b.nic().stats().droppedFenced() == 6);
            assertNothingArrives(client);
            assertThat(b.nic().stats().releasedFrames()).isZero();
        }
    }

    @Test
    void atTheFrameLimitExtraFramesAreDroppedCountedAndTheHighWaterMarkAsksForACheckpoint() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true);
             Installed b = install(lab, new BufferLimits().maxFrames(20).highWaterPercent(50).conclude()))
        {
            final DatagramSocket guest = udp(lab, lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = udp(lab, lab.client, NetnsLab.CLIENT_IP, 9000);
            b.nic().hold(1);
            assertThat(b.nic().wantsCheckpoint()).isFalse();
            for (int i = 0; i < 30; i++)
            {
                send(guest, i, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> b.nic().stats().heldFrames() == 20 && b.nic().stats().droppedLimitFrames() == 10);
            assertThat(b.nic().wantsCheckpoint()).isTrue();
            assertThat(b.nic().stats().earlyCheckpointRequests()).isEqualTo(1);
            assertNothingArrives(client);
            b.nic().seal(1);
            assertThat(b.nic().wantsCheckpoint()).isFalse();
            b.nic().release(1);
            for (int i = 0; i < 20; i++)
            {
                assertThat(receive(client)).isEqualTo(i);
            }
            assertNothingArrives(client);
            await().until(() -> b.nic().stats().releasedFrames() == 20);
        }
    }
}
