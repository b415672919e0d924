package dev.colod.buffer.hybrid;

import org.junit.jupiter.api.Test;

import java.io.DataOutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** The primary's end of the frames channel over a real loopback socket, the secondary's side written by hand. */
class PrimaryMirrorTest
{
    /** What reached the NIC side: the copy's TCP records as the comparer gets them. */
    private record Tcp(long era, byte[] body, int window)
    {
    }

    @Test
    void aTcpRecordWithItsWindowReachesTheComparerAsKindFourAndTheWindowBesideIt() throws Exception
    {
        final BlockingQueue<Tcp> got = new LinkedBlockingQueue<>();
        final PrimaryMirror.NicSide side = new PrimaryMirror.NicSide()
        {
            @Override
            public void secondaryEra(final long era, final long nowNs)
            {
            }

            @Override
            public void digest(final long era, final byte[] body, final long nowNs)
            {
            }

            @Override
            public void tcp(final long era, final byte[] body, final int length, final int window, final long nowNs)
            {
                got.add(new Tcp(era, java.util.Arrays.copyOf(body, length), window));
            }
        };
        final PrimaryMirror mirror = new PrimaryMirror("vm-test", 1, n -> side);
        try (ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
             Socket primarySide = new Socket())
        {
            primarySide.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), server.getLocalPort()));
            try (Socket secondarySide = server.accept())
            {
                mirror.attach(primarySide, "test");
                final DataOutputStream out = new DataOutputStream(secondarySide.getOutputStream());
                FramesCodec.writeEra(out, FramesCodec.ALL_NICS, 7);
                // be64 flow, be32 seq, be32 ack, flags, be16 window, payload "hello"
                final byte[] rec = new byte[FramesCodec.TCP_WINDOW_HEADER + 5];
                rec[7] = 42;
                FrameDigest.putBe32(rec, 8, 1000);
                FrameDigest.putBe32(rec, 12, 2000);
                rec[16] = 0x18;
                rec[17] = 0x01;
                rec[18] = 0x02;
                System.arraycopy("hello".getBytes(), 0, rec, FramesCodec.TCP_WINDOW_HEADER, 5);
                FramesCodec.write(out, FramesCodec.TCP_WINDOW, 0, rec, 0, rec.length);
                // the same segment as a secondary of an older build sends it: no window
                final byte[] old = new byte[FramesCodec.TCP_HEADER + 5];
                System.arraycopy(rec, 0, old, 0, FramesCodec.TCP_HEADER);
                System.arraycopy("hello".getBytes(), 0, old, FramesCodec.TCP_HEADER, 5);
                FramesCodec.write(out, FramesCodec.TCP, 0, old, 0, old.length);
                out.flush();

                final Tcp first = got.poll(10, TimeUnit.SECONDS);
                assertThat(first).isNotNull();
                assertThat(first.era()).isEqualTo(7);
                assertThat(first.window()).isEqualTo(0x0102);
                assertThat(first.body()).as("kind 4's layout").isEqualTo(old);
                final Tcp second = got.poll(10, TimeUnit.SECONDS);
                assertThat(second).isNotNull();
                assertThat(second.window()).as("unknown").isEqualTo(-1);
                assertThat(second.body()).isEqualTo(old);
                assertThat(mirror.comparing()).isTrue();
                assertThat(mirror.stats().open()).isTrue();
            }
            // the secondary's end closed (a crash, a restart): the channel no longer compares, and status says so
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (mirror.comparing() && System.nanoTime() - deadline < 0)
            {
                Thread.sleep(10);
            }
            assertThat(mirror.comparing()).as("comparing after the secondary closed its end").isFalse();
            assertThat(mirror.stats().open()).as("frames_channel open in status").isFalse();
        }
        finally
        {
            mirror.detach();
        }
    }
}
