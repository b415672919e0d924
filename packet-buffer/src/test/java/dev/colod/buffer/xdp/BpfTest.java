package dev.colod.buffer.xdp;

import dev.colod.buffer.NetnsLab;
import dev.colod.os.IpRoute;
import dev.colod.os.Netns;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * colod's BPF programs go through the real kernel verifier, and attach to a real tap in a namespace of the test's
 * own through a BPF link that detaches when it closes (issue 14's first step: the loader).
 */
class BpfTest
{
    @BeforeEach
    void usable()
    {
        NetnsLab.requireUsable();
    }

    @Test
    void theEgressProgramPassesTheKernelVerifier() throws Exception
    {
        final int map = Bpf.mapCreate(Bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, 1, "colod_xsks");
        try
        {
            final int prog = Bpf.progLoad(Bpf.BPF_PROG_TYPE_XDP, Bpf.BPF_XDP, "colod_hold", XdpPrograms.holdEgress(map));
            assertThat(prog).isPositive();
            Bpf.close(prog, "program");
        }
        finally
        {
            Bpf.close(map, "map");
        }
    }

    @Test
    void aProgramTheVerifierRefusesComesBackWithItsLog()
    {
        // return r0 without ever setting it
        final long[] broken = {Bpf.Insn.exit()};
        assertThatThrownBy(() -> Bpf.progLoad(Bpf.BPF_PROG_TYPE_XDP, Bpf.BPF_XDP, "colod_broken", broken))
            .isInstanceOf(Bpf.VerifierException.class)
            .hasMessageContaining("EACCES")
            .satisfies(e -> assertThat(((Bpf.VerifierException)e).verifierLog()).contains("R0 !read_ok"));
    }

    @Test
    void theProgramAttachesToATapThroughALinkThatDetachesItWhenClosed() throws Exception
    {
        final String ns = "colot-x-" + ProcessHandle.current().pid() % 100000;
        Netns.add(ns);
        try
        {
            final IpRoute ip = new IpRoute(ns);
            ip.ip("tuntap", "add", "dev", "xt0", "mode", "tap");
            ip.ip("link", "set", "xt0", "up");
            final int ifindex = Integer.parseInt(ip.ip("-o", "link", "show", "dev", "xt0").split(":")[0].trim());
            final int map = Bpf.mapCreate(Bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, 1, "colod_xsks");
            final int prog = Bpf.progLoad(Bpf.BPF_PROG_TYPE_XDP, Bpf.BPF_XDP, "colod_hold", XdpPrograms.holdEgress(map));
            final int link = Netns.call(ns, () -> Bpf.attachXdp(prog, ifindex, Bpf.XDP_FLAGS_DRV_MODE, "xt0"));
            assertThat(ip.ip("-d", "link", "show", "dev", "xt0")).contains("xdp");
            Bpf.close(link, "link");
            Bpf.close(prog, "program");
            Bpf.close(map, "map");
            assertThat(ip.ip("-d", "link", "show", "dev", "xt0")).as("detached with its link").doesNotContain("prog/xdp");
        }
        finally
        {
            Netns.delete(ns);
        }
    }
}
