package dev.colod.buffer.xdp;

import dev.colod.buffer.NetnsLab;
import dev.colod.buffer.tap.TapDevice;
import dev.colod.os.IpRoute;
import dev.colod.os.Netns;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The XDP data path's pieces with the real kernel, in a namespace of the test's own: a frame written into a tap
 * (as QEMU writes guest egress) is redirected by colod's XDP program into an AF_XDP socket's UMEM; a second
 * socket on a veth sharing that UMEM sends it on by its address (no copy here, one kick), the veth's peer
 * receives it, and the completion ring hands the chunk back. With no socket in the map the program drops.
 */
class XskSocketTest
{
    private static final int CHUNK = 2048;
    private static final int CHUNKS = 64;

    @BeforeEach
    void usable()
    {
        NetnsLab.requireUsable();
    }

    private static int ifindex(final IpRoute ip, final String dev) throws Exception
    {
        return Integer.parseInt(ip.ip("-o", "link", "show", "dev", dev).split(":")[0].trim());
    }

    private static long rxPackets(final IpRoute ip, final String dev) throws Exception
    {
        final String[] lines = ip.ip("-s", "link", "show", "dev", dev).split("\n");
        for (int i = 0; i < lines.length; i++)
        {
            if (lines[i].trim().startsWith("RX:"))
            {
                return Long.parseLong(lines[i + 1].trim().split("\\s+")[1]);
            }
        }
        throw new AssertionError("no RX counters for " + dev);
    }

    /** An Ethernet frame to the broadcast address with {@code tag} in its payload. */
    private static ByteBuffer frame(final int tag)
    {
        final ByteBuffer f = ByteBuffer.allocateDirect(60);
        f.put(new byte[]{-1, -1, -1, -1, -1, -1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, (byte)0x88, (byte)0xb5});
        f.putInt(tag);
        return f.clear();
    }

    @Test
    void aFrameQemuWritesIsHeldInTheUmemAndLeavesThroughTheUplinkSocketByItsAddress() throws Exception
    {
        final String ns = "colot-k-" + ProcessHandle.current().pid() % 100000;
        Netns.add(ns);
        try (XskSocket.Umem umem = new XskSocket.Umem(CHUNKS, CHUNK))
        {
            final IpRoute ip = new IpRoute(ns);
            final TapDevice tap = Netns.call(ns, () -> TapDevice.open("xk0")); // the test plays QEMU
            ip.ip("link", "set", "xk0", "up");
            ip.ip("link", "add", "xu0", "type", "veth", "peer", "name", "xu1");
            ip.ip("link", "set", "xu0", "up");
            ip.ip("link", "set", "xu1", "up");
            final int map = Bpf.mapCreate(Bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, 1, "colod_xsks");
            final int prog = Bpf.progLoad(Bpf.BPF_PROG_TYPE_XDP, Bpf.BPF_XDP, "colod_hold", XdpPrograms.holdEgress(map));
            final int link = Netns.call(ns, () -> Bpf.attachXdp(prog, ifindex(ip, "xk0"), Bpf.XDP_FLAGS_DRV_MODE, "xk0"));
            try
            {
                // with no socket in the map, egress is dropped (fail-closed), not passed to the host
                tap.fd().write(frame(0), 0, 60);

                final XskSocket guest = Netns.call(ns, () -> XskSocket.open(umem, ifindex(ip, "xk0"), 0, 32, "xk0"));
                final XskSocket uplink = Netns.call(ns, () -> XskSocket.sharing(guest, ifindex(ip, "xu0"), 0, 32, "xu0"));
                try
                {
                    Bpf.mapUpdate(map, 0, guest.fd());
                    final long[] chunks = new long[16];
                    for (int i = 0; i < chunks.length; i++)
                    {
                        chunks[i] = (long)i * CHUNK;
                    }
                    assertThat(guest.fill(chunks, 0, chunks.length)).isEqualTo(16);
                    for (int t = 1; t <= 3; t++)
                    {
                        tap.fd().write(frame(t), 0, 60);
                    }
                    final List<long[]> held = new ArrayList<>();
                    final long deadline = System.nanoTime() + 5_000_000_000L;
                    while (held.size() < 3 && System.nanoTime() < deadline)
                    {
                        guest.receive((addr, len) -> held.add(new long[]{addr, len}));
                        Thread.onSpinWait();
                    }
                    assertThat(held).as("frames redirected into the UMEM").hasSize(3);
                    for (int t = 1; t <= 3; t++)
                    {
                        final long[] h = held.get(t - 1);
                        assertThat(h[1]).isEqualTo(60);
                        assertThat(umem.bytes.getInt((int)h[0] + 14)).as("frame %d's bytes in the UMEM", t)
                            .isEqualTo(Integer.reverseBytes(t));
                    }

                    final long before = rxPackets(ip, "xu1");
                    for (final long[] h : held)
                    {
                        assertThat(uplink.queue(h[0], (int)h[1])).isTrue();
                    }
                    uplink.kick(); // one system call for the whole epoch
                    final List<Long> done = new ArrayList<>();
                    while (done.size() < 3 && System.nanoTime() < deadline)
                    {
                        uplink.completed(done::add);
                        Thread.onSpinWait();
                    }
                    assertThat(done).as("chunks handed back").containsExactlyInAnyOrder(held.get(0)[0], held.get(1)[0],
                        held.get(2)[0]);
                    assertThat(rxPackets(ip, "xu1") - before).as("frames the uplink's peer received").isEqualTo(3);
                    assertThat(uplink.kicks).isEqualTo(1);
                }
                finally
                {
                    uplink.close();
                    guest.close();
                }
            }
            finally
            {
                Bpf.close(link, "link");
                Bpf.close(prog, "program");
                Bpf.close(map, "map");
                tap.close();
            }
        }
        finally
        {
            Netns.delete(ns);
        }
    }
}
