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
}
