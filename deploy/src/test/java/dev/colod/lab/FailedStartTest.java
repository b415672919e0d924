package dev.colod.lab;

import dev.colod.lab.TwoHostLab.Lab;
import dev.colod.os.IpRoute;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A colod daemon (on-stop: leave-running, the production default) whose start fails after it started the VM's
 * QEMU (here: the NIC's bridge is missing) leaves nothing behind: the QEMU it started is stopped, not left running
 * the guest unprotected and orphaned.
 */
class FailedStartTest
{
    @Test
    void aStartThatFailsStopsTheQemuItStarted() throws Exception
    {
        new FailoverEndToEndTest().usable();
        Process colod = null;
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final Path run = lab.runDir.resolve("p-run");
            final Path log = lab.runDir.resolve("primary.log");
            try
            {
                new IpRoute(lab.pri).ip("link", "del", "br0");
                Files.writeString(lab.runDir.resolve("primary.yaml"), lab.yaml("primary", run, 200, false, false));
                colod = DaemonEndToEndTest.colod(lab.pri, lab.runDir.resolve("primary.yaml"), log);
                assertThat(colod.waitFor(120, TimeUnit.SECONDS)).as("colod ends after a failed start").isTrue();
                final String said = Files.readString(log);
                System.out.println("failed start: exit " + colod.exitValue() + "; " + said.lines()
                    .filter(l -> l.contains("start-up failed")).findFirst().orElse(""));
                assertThat(colod.exitValue()).isEqualTo(1);
                assertThat(said).contains("br0");
                assertThat(Files.exists(run.resolve("e2e/qemu.out"))).as("QEMU was started before the failure").isTrue();
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (ProcessHandle.allProcesses().anyMatch(h -> h.info().commandLine().orElse("").contains(run.toString()) &&
                    h.info().command().orElse("").contains("qemu")))
                {
                    assertThat(System.nanoTime() - deadline).as("no QEMU of %s left after the failed start", run).isNegative();
                    Thread.sleep(50);
                }
            }
            finally
            {
                DaemonEndToEndTest.stopAll(lab, new Process[]{colod}, run);
            }
        }
    }
}
