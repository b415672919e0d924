package dev.colod.agent.config;

import dev.colod.buffer.Prerequisites;
import dev.colod.os.IpRoute;
import dev.colod.os.Netns;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** {@code coloctl config check --host}: what this host lacks for a valid file, every problem at once, by key. */
class HostCheckTest
{
    private final String ns = "colot-hc-" + ProcessHandle.current().pid() % 100000;

    @TempDir
    Path dir;

    @BeforeEach
    void namespace() throws Exception
    {
        Prerequisites.require("the host check", Prerequisites.isRoot() ? null : "not root (creates a network namespace)");
        Netns.add(ns);
        new IpRoute(ns).ip("link", "add", "br-hc", "type", "bridge");
    }

    @AfterEach
    void cleanUp()
    {
        Netns.delete(ns);
    }

    private ColodConfig config(final String bridge, final String kernel) throws Exception
    {
        final ColodConfig c = new ColodConfig();
        c.runtimeDir = dir.resolve("run").toString();
        c.ramDir = dir.resolve("ram").toString();
        c.stateDir = dir.resolve("state").toString();
        c.insecure = true;
        final ColodConfig.Vm v = new ColodConfig.Vm();
        v.name = "web1";
        v.netns = ns;
        v.accel = ColodConfig.Accel.TCG;
        v.kernel = kernel;
        final ColodConfig.Nic n = new ColodConfig.Nic();
        n.tap = "vt0";
        n.mac = "52:54:00:12:34:56";
        n.bridge = bridge;
        v.nics.add(n);
        c.vms.add(v);
        return c;
    }

    @Test
    void aHostWithEverythingHasNoProblems() throws Exception
    {
        final Path kernel = Files.writeString(dir.resolve("vmlinuz"), "k");
        assertThat(HostCheck.problems(config("br-hc", kernel.toString()))).isEmpty();
    }

    @Test
    void everyProblemIsReportedOnceByItsKey() throws Exception
    {
        final ColodConfig c = config("br-missing", dir.resolve("no-such-kernel").toString());
        c.vms.get(0).accel = ColodConfig.Accel.KVM;
        final ColodConfig.Vm other = config("br-hc", null).vms.get(0);
        other.name = "web2";
        other.netns = "colot-hc-no-such-ns";
        c.vms.add(other);
        c.arbiter = new ColodConfig.Arbiter();
        c.arbiter.etcd = List.of("http://127.0.0.1:1");
        final Path file = Files.writeString(dir.resolve("a-file"), "not a directory");
        c.stateDir = file.resolve("state").toString();
        final List<String> p = HostCheck.problems(c);
        assertThat(p).anyMatch(l -> l.startsWith("vms[0].kernel: " + dir.resolve("no-such-kernel") + " does not exist"))
            .anyMatch(l -> l.startsWith("vms[0].nics[0].bridge: br-missing does not exist in netns " + ns))
            .anyMatch(l -> l.startsWith("vms[1].netns: network namespace colot-hc-no-such-ns does not exist"))
            .anyMatch(l -> l.startsWith("arbiter.etcd: no endpoint answers: http://127.0.0.1:1"))
            .anyMatch(l -> l.startsWith("state-dir: " + file.resolve("state") + " cannot be created or written here"));
        if (!Files.exists(Path.of("/dev/kvm")))
        {
            assertThat(p).anyMatch(l -> l.startsWith("vms[0].accel: kvm, but /dev/kvm does not exist"));
        }
        assertThat(p).noneMatch(l -> l.startsWith("vms[1].nics"));
    }

    /** {@code ram-page-size: 2m}: hugepage-dir must be a hugetlbfs with 2 MiB pages, with the guest's RAM in free ones. */
    @Test
    void twoMiBPagesNeedAHugetlbfsWithTheGuestsRamInFreePages() throws Exception
    {
        final Path kernel = Files.writeString(dir.resolve("vmlinuz"), "k");
        final ColodConfig c = config("br-hc", kernel.toString());
        c.vms.get(0).ramPageSize = ColodConfig.RamPageSize.PAGE_2M;
        c.vms.get(0).memoryMib = 1 << 20; // 1 TiB: more free 2 MiB pages than any host here has
        c.hugepageDir = dir.resolve("no-such-dir").toString();
        assertThat(HostCheck.problems(c)).containsExactly("vms[0].ram-page-size: 2m, hugepage-dir: " + c.hugepageDir +
            " does not exist (mount hugetlbfs there: mount -t hugetlbfs -o pagesize=2M none " + c.hugepageDir + ")");
        final Path plain = Files.createDirectories(dir.resolve("plain"));
        c.hugepageDir = plain.toString();
        assertThat(HostCheck.problems(c)).singleElement().asString()
            .startsWith("vms[0].ram-page-size: 2m, hugepage-dir: " + plain + " is on ").contains(", not hugetlbfs");
        final Path huge = Files.createDirectories(dir.resolve("huge"));
        IpRoute.exec(List.of("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", huge.toString()));
        try
        {
            c.hugepageDir = huge.toString();
            assertThat(HostCheck.problems(c)).singleElement().asString()
                .startsWith("vms[0].ram-page-size: 2m, hugepage-dir: the guest's 1048576 MiB need 524288 free 2 MiB pages, " +
                    "this host has ");
            c.vms.get(0).memoryMib = 128;
            final long free = Long.parseLong(Files.readAllLines(
                Path.of("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")).get(0).trim());
            if (free >= 64)
            {
                assertThat(HostCheck.problems(c)).isEmpty();
            }
        }
        finally
        {
            IpRoute.exec(List.of("umount", huge.toString()));
        }
    }
}
