package dev.colod.lab;

import dev.colod.agent.vm.StandbyImage;
import dev.colod.buffer.NetnsLab;
import dev.colod.buffer.Prerequisites;
import dev.colod.core.ColoConfig;
import dev.colod.core.ExitEvent;
import dev.colod.core.ProtectionState;
import dev.colod.core.spi.StateCapture;
import dev.colod.core.spi.VmStateSink;
import dev.colod.core.spi.VmStateSource;
import dev.colod.core.status.ColoCounters;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.io.IOException;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32C;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The whole story with a real QEMU guest (TCG) whose HTTP counter lives in guest RAM, in network namespaces
 * this test creates: a primary host, a secondary host, a switch and a client. The primary is killed (QEMU and
 * agent) while a client increments the counter; the secondary resumes the guest from its last committed
 * checkpoint. With output commit the client never sees a value twice; the control run without it does.
 * <pre>
 *   pri: vt0 (QEMU tap) -> [colod output commit] -> br0 -> p-up ==veth== s-p ┐
 *   sec: vt0 (failover QEMU tap) ----------------> br0 -> s-up ==veth== s-s ┤ sw: sw0
 *   cli: c0 198.18.0.100 ================================================ s-c ┘
 *   replication: pri rp 198.19.0.1 ==veth== rs 198.19.0.2 sec
 * </pre>
 */
class FailoverEndToEndTest
{
    static final Path GUEST = Path.of(System.getProperty("colod.guest.dir", "../build/guest")).toAbsolutePath().normalize();

    @BeforeEach
    void usable()
    {
        requireLab();
    }

    /** Root, namespaces, QEMU, the test guest and etcd (the lab is arbitrated). */
    static void requireLab()
    {
        NetnsLab.requireUsable();
        Prerequisites.require("the lab's arbiter", dev.colod.agent.arbiter.LocalEtcd.missing());
        Prerequisites.require("QEMU end-to-end", Files.isExecutable(Path.of("/usr/bin/qemu-system-x86_64")) ? null
            : "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        Prerequisites.require("QEMU end-to-end", Files.exists(GUEST.resolve("vmlinuz")) &&
            Files.exists(GUEST.resolve("initrd.img")) ? null : "no test guest in " + GUEST +
            " (run deploy/guest/build-guest.sh " + GUEST + ")");
    }

    /** Page CRCs of the primary's RAM at capture and of the secondary's image at commit, per checkpoint. */
    static final class Hashes
    {
        final Map<Long, int[]> primary = new ConcurrentHashMap<>();
        final Map<Long, int[]> secondary = new ConcurrentHashMap<>();
        final long from;
        final long to;
        /** The standby's file that must equal the primary's: its RAM image, or its disk image. */
        final java.util.function.Function<StandbyImage, Path> standbyFile;

        Hashes(final long from, final long to)
        {
            this(from, to, StandbyImage::ramFile);
        }

        Hashes(final long from, final long to, final java.util.function.Function<StandbyImage, Path> standbyFile)
        {
            this.from = from;
            this.to = to;
            this.standbyFile = standbyFile;
        }

        static int[] pageCrcs(final Path file) throws IOException
        {
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ))
            {
                final MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
                final int[] out = new int[(int)(ch.size() / 4096)];
                final CRC32C crc = new CRC32C();
                for (int i = 0; i < out.length; i++)
                {
                    crc.reset();
                    crc.update(m.slice(i * 4096, 4096));
                    out[i] = (int)crc.getValue();
                }
                return out;
            }
        }

        VmStateSource source(final VmStateSource inner, final Path ram)
        {
            return new VmStateSource.Forwarding(inner)
            {
                @Override
                public StateCapture capture(final long id) throws IOException
                {
                    final StateCapture c = inner.capture(id);
                    if (id >= from && id <= to)
                    {
                        primary.put(id, pageCrcs(ram)); // the VM is still paused here
                    }
                    return c;
                }
            };
        }

        VmStateSink sink(final StandbyImage image)
        {
            return new VmStateSink.Forwarding(image)
            {
                @Override
                public void commit(final long id) throws IOException
                {
                    inner.commit(id);
                    if (id >= from && id <= to)
                    {
                        secondary.put(id, pageCrcs(standbyFile.apply(image)));
                    }
                }
            };
        }
    }

    @Test
    void hotStandbyFailoverOnlyLoadsDeviceStateAndKeepsTheCounterIncreasing() throws Exception
    {
        try (Lab rig = new Lab(GUEST))
        {
            rig.bootPrimary(TwoHostLab.Protection.of(200));
            rig.protect(TwoHostLab.Protection.of(200).hot());
            try (Client client = new Client(rig.cli))
            {
                while (client.values().size() < 4)
                {
                    Thread.sleep(20);
                }
                final long killedAt = System.nanoTime();
                rig.killPrimary();
                final ExitEvent e = awaitFailover(rig);
                assertThat(rig.failover().lastStartMicros).as("no QEMU start at failover: it was waiting").isLessThan(5_000);
                awaitAnswers(client, killedAt);
                client.close();
                System.out.printf("hot standby: load+cont %d ms; values %s%n", rig.failover().lastLoadMicros / 1000,
                    client.values());
                assertStrictlyIncreasing(client.values());
            }
        }
    }

    @ParameterizedTest
    @EnumSource(ColoConfig.Mode.class)
    void clientSeesStrictlyIncreasingCounterThroughFailoverWithOutputCommit(final ColoConfig.Mode mode) throws Exception
    {
        try (Lab rig = new Lab(GUEST))
        {
            final Hashes hashes = new Hashes(3, 5);
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200).in(mode)
                .observed(s -> hashes.source(s, rig.primaryRam()), hashes::sink);
            rig.bootPrimary(how);
            rig.protect(how);
            try (Client client = new Client(rig.cli))
            {
                // checkpoint content: the standby image equals the primary's RAM at checkpoints 3..5
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (hashes.secondary.size() < 3)
                {
                    assertThat(System.nanoTime() - deadline).as("checkpoints 3..5 committed in time").isNegative();
                    Thread.sleep(20);
                }
                for (long id = 3; id <= 5; id++)
                {
                    final int[] p = hashes.primary.get(id);
                    final int[] s = hashes.secondary.get(id);
                    assertThat(s.length).isEqualTo(p.length);
                    final int differing = firstDifference(p, s);
                    assertThat(differing).as("first differing page of checkpoint %d", id).isEqualTo(-1);
                }

                // a random moment of the checkpoint cycle, once the client has been counting for a while
                while (client.values().size() < 5)
                {
                    Thread.sleep(20);
                }
                if (mode.secondaryRuns())
                {
                    // hybrid: the secondary's copy of the VM runs between checkpoints, suspended and resumed by them
                    final ColoCounters sc = rig.secondary().counters();
                    final long resumed = sc.runningCopyResumes.get();
                    final long deadline2 = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                    while (sc.runningCopyResumes.get() < resumed + 3)
                    {
                        assertThat(System.nanoTime() - deadline2).as("the running copy follows the checkpoints").isNegative();
                        Thread.sleep(20);
                    }
                    assertThat(sc.runningCopyErrors.get()).as("running copy errors").isZero();
                    assertThat(rig.failover().runningCopy().running().isAlive()).isTrue();
                    System.out.printf("%s: running copy pid %d, %d suspends, %d resumes, last load %.1f ms%n", mode,
                        rig.failover().runningCopy().running().pid(), sc.runningCopySuspends.get(),
                        sc.runningCopyResumes.get(), rig.failover().runningCopy().lastLoadMicros() / 1000.0);
                    System.out.printf("%s: primary comparison %s%n%s: secondary copy frames %s%n", mode,
                        rig.host("primary").handle().status().get("comparison"), mode,
                        rig.host("secondary").handle().status().get("copy_frames"));
                }
                final long seed = System.nanoTime();
                System.out.printf("%s: kill after a random delay (seed %d)%n", mode, seed);
                Thread.sleep(new Random(seed).nextInt(2_000));
                final long before = client.values().size();
                final long killedAt = System.nanoTime();
                rig.killPrimary();
                final ExitEvent e = awaitFailover(rig);
                assertThat(rig.secondary().state()).isEqualTo(ProtectionState.FAILED_OVER);
                awaitAnswers(client, killedAt);
                client.close();
                final List<Long> values = client.values();
                System.out.printf("%s, output commit on: %d values before the kill, %d after; failover: QEMU start %d ms," +
                    " load+cont %d ms; values %s%n", mode, before, values.size() - before, rig.failover().lastStartMicros / 1000,
                    rig.failover().lastLoadMicros / 1000, values);
                assertStrictlyIncreasing(values);
                assertThat(rig.nic().releasedFrames()).as("frames were held and released").isPositive();
                if (mode.secondaryRuns())
                {
                    // hybrid: held output waits for comparison, not for an output-triggered checkpoint
                    assertThat(rig.primary().counters().checkpointsByOutput.get()).isZero();
                    assertThat(rig.comparison().compared()).as("frames compared").isPositive();
                    assertThat(rig.comparison().matched()).as("frames matched by the running copy's").isPositive();
                }
                else
                {
                    assertThat(rig.primary().counters().checkpointsByOutput.get())
                        .as("the output trigger (the default) started checkpoints").isPositive();
                }
            }
        }
    }

    @Test
    void theXdpBackendHoldsTheRealGuestsOutputInItsUmemThroughAFailover() throws Exception
    {
        try (Lab rig = new Lab(GUEST).buffer(dev.colod.agent.config.ColodConfig.Buffer.XDP))
        {
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200);
            rig.bootPrimary(how);
            rig.protect(how);
            try (Client client = new Client(rig.cli))
            {
                while (client.values().size() < 5)
                {
                    Thread.sleep(20);
                }
                final long held = rig.nic().releasedFrames();
                killPrimaryAfter(rig, client, 5);
                System.out.printf("xdp backend: %d frames held and released before the kill; values %s%n", held,
                    client.values());
                assertThat(held).as("frames held in the UMEM and released").isPositive();
                assertStrictlyIncreasing(client.values());
            }
        }
    }

    /**
     * The guest's RAM on 2 MiB pages ({@code ram-page-size: 2m}, a hugetlbfs of the lab's own): written pages are found
     * and copied as whole huge pages, and the standby built from them (on 4 KiB pages) takes over with the counter
     * increasing.
     */
    @Test
    void aGuestOnTwoMiBPagesIsProtectedAndFailsOverWithItsCounterIncreasing() throws Exception
    {
        try (Lab rig = new Lab(GUEST))
        {
            rig.hugePages();
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200);
            rig.bootPrimary(how);
            rig.protect(how);
            assertThat(rig.stateSource().ramPageBytes()).as("the primary's RAM page size").isEqualTo(2L << 20);
            try (Client client = new Client(rig.cli))
            {
                killPrimaryAfter(rig, client, 5);
                System.out.printf("2 MiB pages: %d checkpoints, write audit %d pages re-read, %d misses; values %s%n",
                    rig.primary().counters().checkpointsCompleted.get(), rig.stateSource().auditedPages(),
                    rig.stateSource().auditMisses(), client.values());
                assertThat(rig.stateSource().auditMisses()).as("pages the write tracking missed").isZero();
                assertStrictlyIncreasing(client.values());
            }
        }
    }

    @Test
    void aPrimaryWhoseQemuDiesHandsTheVmToItsSecondary() throws Exception
    {
        try (Lab rig = new Lab(GUEST))
        {
            rig.bootPrimary(TwoHostLab.Protection.of(200));
            rig.protect(TwoHostLab.Protection.of(200));
            try (Client client = new Client(rig.cli))
            {
                while (client.values().size() < 4)
                {
                    Thread.sleep(20);
                }
                final long killedAt = System.nanoTime();
                rig.qemu().crash(); // only the VM: the host, its colod and the network live on
                final ExitEvent e = awaitFailover(rig);
                assertThat(e.detail()).contains("lost its VM");
                assertThat(rig.primary().state()).isEqualTo(ProtectionState.FENCED);
                awaitAnswers(client, killedAt);
                client.close();
                System.out.println("primary's QEMU died, secondary took over: values " + client.values());
                assertStrictlyIncreasing(client.values());
            }
        }
    }

    @Test
    void aFourGiBGuestIsSynchronisedLiveThenCheckpointsOnlyWhatItWritesAndFailsOver() throws Exception
    {
        try (Lab rig = new Lab(GUEST, 4096))
        {
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200).in(ColoConfig.Mode.SPECULATIVE);
            rig.bootPrimary(how);
            rig.protect(how);
            final long ramPages = (4096L << 20) / 4096;
            assertThat(rig.primary().counters().baseSyncMicros.getTotalCount()).as("one live base image").isEqualTo(1);
            assertThat(rig.stateSource().timings().dirtyPages().getMaxValue())
                .as("no paused checkpoint carried all of RAM: the first one only what was written during the base")
                .isLessThan(ramPages / 8);
            try (Client client = new Client(rig.cli))
            {
                killPrimaryAfter(rig, client, 4);
                System.out.printf("4 GiB: base synchronised live in %d ms, largest paused checkpoint %d pages of %d, " +
                        "pause p50 %.1f ms p99 %.1f ms; values %s%n",
                    rig.primary().counters().baseSyncMicros.getMaxValue() / 1000, rig.stateSource().timings().dirtyPages().getMaxValue(),
                    ramPages, rig.primary().counters().pauseMicros.getValueAtPercentile(50) / 1000.0,
                    rig.primary().counters().pauseMicros.getValueAtPercentile(99) / 1000.0, client.values());
                assertStrictlyIncreasing(client.values());
            }
        }
    }

    @ParameterizedTest
    @EnumSource(ColoConfig.Mode.class)
    void controlRunWithoutOutputCommitShowsTheClientARepeatedValue(final ColoConfig.Mode mode) throws Exception
    {
        try (Lab rig = new Lab(GUEST))
        {
            final TwoHostLab.Protection control = TwoHostLab.Protection.of(1_000).in(mode).withoutOutputCommit();
            rig.bootPrimary(control);
            rig.protect(control);
            try (Client client = new Client(rig.cli))
            {
                // kill late in an epoch, once the client has seen answers produced after the last checkpoint:
                // those answers come from state the secondary never gets
                while (true)
                {
                    final long last = rig.primary().counters().lastCheckpointNanos.get();
                    final long sinceMs = (System.nanoTime() - last) / 1_000_000;
                    if (client.values().size() >= 3 && sinceMs > 600 && sinceMs < 900 && client.countSince(last) >= 2)
                    {
                        break;
                    }
                    Thread.sleep(5);
                }
                final long killedAt = System.nanoTime();
                rig.killPrimary();
                awaitFailover(rig);
                awaitAnswers(client, killedAt);
                client.close();
                final List<Long> values = client.values();
                System.out.println(mode + ", output commit off (control): values " + values);
                boolean violated = false;
                for (int i = 1; i < values.size(); i++)
                {
                    violated |= values.get(i) <= values.get(i - 1);
                }
                assertThat(violated).as("without output commit the client sees a repeated or smaller value: %s", values)
                    .isTrue();
            }
        }
    }

    /**
     * Once the client has {@code answers} answers: the primary host dies; waits for the failover and for the
     * client to be served again, then closes the client. Returns the secondary's failover event.
     */
    static ExitEvent killPrimaryAfter(final Lab rig, final Client client, final int answers) throws Exception
    {
        while (client.values().size() < answers)
        {
            Thread.sleep(20);
        }
        final long killedAt = System.nanoTime();
        rig.killPrimary();
        final ExitEvent e = awaitFailover(rig);
        awaitAnswers(client, killedAt);
        client.close();
        return e;
    }

    /** The secondary's next exit event, which must be its failover. */
    static ExitEvent awaitFailover(final Lab rig) throws InterruptedException
    {
        final ExitEvent e = rig.secondaryExits().poll(60, TimeUnit.SECONDS);
        assertThat(e).as("secondary exit event").isNotNull();
        assertThat(e.failedOver()).as(e.detail()).isTrue();
        return e;
    }

    /** Waits (at most 60 s) until the client has had 3 answers since {@code sinceNanos}. */
    static void awaitAnswers(final Client client, final long sinceNanos) throws InterruptedException
    {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (client.countSince(sinceNanos) < 3)
        {
            assertThat(System.nanoTime() - deadline).as("client answered after failover").isNegative();
            Thread.sleep(50);
        }
    }

    static void assertStrictlyIncreasing(final List<Long> values)
    {
        for (int i = 1; i < values.size(); i++)
        {
            assertThat(values.get(i)).as("value %d of %s", i, values).isGreaterThan(values.get(i - 1));
        }
    }

    static int firstDifference(final int[] a, final int[] b)
    {
        for (int i = 0; i < a.length; i++)
        {
            if (a[i] != b[i])
            {
                return i;
            }
        }
        return -1;
    }
}
