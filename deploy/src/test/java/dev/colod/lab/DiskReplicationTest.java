package dev.colod.lab;

import dev.colod.agent.vm.StandbyImage;
import dev.colod.core.ColoConfig;
import dev.colod.os.Netns;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static dev.colod.lab.FailoverEndToEndTest.GUEST;
import static dev.colod.lab.FailoverEndToEndTest.assertStrictlyIncreasing;
import static dev.colod.lab.FailoverEndToEndTest.awaitAnswers;
import static dev.colod.lab.FailoverEndToEndTest.awaitFailover;
import static dev.colod.lab.FailoverEndToEndTest.firstDifference;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * The guest's disk is part of the checkpoint (issue 13), with the real test guest, a real raw image on each host,
 * and QEMU's dirty bitmaps and NBD server: the guest's {@code /cgi-bin/disk} keeps a counter on /dev/vda (O_DIRECT,
 * synced) and the value it last wrote there in RAM, and answers "N D" (new value, what the disk held before). With
 * RAM and disk from one checkpoint D is always N - 1, also after a failover; without disk replication it is not.
 */
class DiskReplicationTest
{
    static final int DISK_MIB = 64;

    @BeforeEach
    void usable()
    {
        FailoverEndToEndTest.requireLab();
    }

    /** Every answer's disk value is the previous value: disk and RAM were never from different moments. */
    static List<String> mismatches(final List<Client.Reading> readings)
    {
        final List<String> bad = new ArrayList<>();
        for (final Client.Reading r : readings)
        {
            final String[] f = r.body().split(" ");
            if (f.length != 2 || Long.parseLong(f[1]) != r.value() - 1)
            {
                bad.add(r.body());
            }
        }
        return bad;
    }

    /** Raw and qcow2 (its extents read and applied through QEMU's block layer); hybrid: HybridEndToEndTest. */
    @ParameterizedTest
    @CsvSource({"STRICT, false", "SPECULATIVE, false", "STRICT, true", "SPECULATIVE, true"})
    void afterAFailoverAtARandomMomentTheGuestSeesTheDiskOfItsCheckpoint(final ColoConfig.Mode mode, final boolean qcow2)
        throws Exception
    {
        try (Lab rig = qcow2 ? new Lab(GUEST).withQcow2Disk(DISK_MIB) : new Lab(GUEST).withDisk(DISK_MIB))
        {
            // cold standby in strict mode, hot standby in speculative mode: both resume with the right disk
            TwoHostLab.Protection how = TwoHostLab.Protection.of(200).in(mode);
            how = mode == ColoConfig.Mode.SPECULATIVE ? how.hot() : how;
            rig.bootPrimary(how);
            rig.protect(how);
            assertThat(rig.primary().counters().baseSyncMicros.getTotalCount()).as("disk and RAM synchronised live")
                .isEqualTo(1);
            try (Client client = new Client(rig.cli, "/cgi-bin/disk"))
            {
                while (client.values().size() < 5)
                {
                    Thread.sleep(20);
                }
                final long seed = System.nanoTime();
                System.out.printf("%s: kill after a random delay (seed %d)%n", mode, seed);
                Thread.sleep(new Random(seed).nextInt(2_000));
                final long killedAt = System.nanoTime();
                final long shipped = rig.stateSource().disk().diskBytesPerCheckpoint.getMaxValue();
                rig.killPrimary();
                awaitFailover(rig);
                awaitAnswers(client, killedAt);
                client.close();
                final List<Client.Reading> readings = client.readings();
                System.out.printf("%s (%s standby), %s disk replicated: answers %s%n", mode,
                    how.hotStandby() ? "hot" : "cold", qcow2 ? "qcow2" : "raw", readings.stream().map(Client.Reading::body).toList());
                assertThat(shipped).as("checkpoints carried disk writes").isPositive();
                assertStrictlyIncreasing(client.values());
                assertThat(mismatches(readings)).as("answers whose disk value is not the previous value").isEmpty();
            }
        }
    }

    @Test
    void eachCommittedStandbyDiskEqualsThePrimarysDiskAtThatPauseInSpeculativeMode() throws Exception
    {
        try (Lab rig = new Lab(GUEST).withDisk(DISK_MIB))
        {
            final FailoverEndToEndTest.Hashes hashes = new FailoverEndToEndTest.Hashes(4, 14, i -> i.diskImages().get(0));
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200).in(ColoConfig.Mode.SPECULATIVE)
                .observed(s -> hashes.source(s, rig.diskImage("primary")), hashes::sink);
            rig.bootPrimary(how);
            rig.protect(how);
            try (Client client = new Client(rig.cli, "/cgi-bin/disk"))
            {
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
                while (hashes.secondary.size() < 11)
                {
                    assertThat(System.nanoTime() - deadline).as("checkpoints 4..14 committed in time").isNegative();
                    Thread.sleep(20);
                }
                int changed = 0;
                for (long id = 4; id <= 14; id++)
                {
                    final int[] p = hashes.primary.get(id);
                    final int[] s = hashes.secondary.get(id);
                    assertThat(firstDifference(p, s)).as("first differing 4 KiB block of the disk at checkpoint %d", id)
                        .isEqualTo(-1);
                    changed += id > 4 && firstDifference(p, hashes.primary.get(id - 1)) >= 0 ? 1 : 0;
                }
                System.out.printf("disk identical at checkpoints 4..14 (it changed between %d of them); answers %s%n",
                    changed, client.values());
                assertThat(changed).as("the guest wrote its disk between these checkpoints").isPositive();
            }
        }
    }

    /**
     * A guest that writes its disk faster than the link carries (512 MiB sequential over a 400 Mbit/s link, speculative
     * mode): with the write governor its writes wait once it is more than twice the early-checkpoint size ahead of the
     * last capture, so no checkpoint carries much more than that; the control run (no early checkpoints, so no
     * governor) shows each checkpoint carrying what the guest wrote during the previous transfer, growing with it.
     */
    @Test
    void aGuestThatWritesAheadOfTheLinkIsHeldBackSoNoCheckpointGrowsWithIt() throws Exception
    {
        final long governed = seqOverSlowLink(true);
        final long free = seqOverSlowLink(false);
        System.out.printf("largest disk part of a checkpoint writing 512 MiB over 400 Mbit/s: governed %d MiB, " +
            "control %d MiB%n", governed >> 20, free >> 20);
        assertThat(governed).as("bounded near twice the early size (16 MiB) plus what was in flight").isLessThan(80L << 20);
        assertThat(free).as("the control run's checkpoints grow with the guest's lead (the test bites)")
            .isGreaterThan(80L << 20);
    }

    /** The largest disk part of a checkpoint while the guest writes 512 MiB; {@code governed}: early checkpoints on. */
    private static long seqOverSlowLink(final boolean governed) throws Exception
    {
        try (Lab rig = new Lab(GUEST).withDisk(1024).plaintext()) // diskbench?seq writes 512 MiB from 1 MiB on
        {
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(100).in(ColoConfig.Mode.SPECULATIVE);
            rig.bootPrimary(how);
            rig.protect(how);
            if (!governed)
            {
                rig.stateSource().earlyCheckpointDiskBytes(0);
            }
            rig.limitReplication("400mbit");
            final long throttles = rig.stateSource().diskThrottles.get();
            rig.stateSource().disk().diskBytesPerCheckpoint.reset();
            Netns.call(rig.cli, () -> TwoHostLab.Http.get(TwoHostLab.GUEST_IP, "/cgi-bin/diskbench?seq", 300_000));
            final long largest = rig.stateSource().disk().diskBytesPerCheckpoint.getMaxValue();
            final long held = rig.stateSource().diskThrottles.get() - throttles;
            System.out.printf("%s: largest disk part %d KiB, writes held back %d times (%d ms), %d checkpoints%n",
                governed ? "governed" : "control", largest >> 10, held, rig.stateSource().diskThrottledMicros.get() / 1000,
                rig.primary().counters().checkpointsCompleted.get());
            assertThat(held).as("the governor acts only when on").matches(n -> governed ? n > 0 : n == 0);
            rig.limitReplication(null);
            return largest;
        }
    }

    @Test
    void controlRunWithoutDiskReplicationShowsRamAndDiskFromDifferentMoments() throws Exception
    {
        try (Lab rig = new Lab(GUEST).withDisk(DISK_MIB))
        {
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200).withoutDiskReplication();
            rig.bootPrimary(how);
            rig.protect(how);
            try (Client client = new Client(rig.cli, "/cgi-bin/disk"))
            {
                FailoverEndToEndTest.killPrimaryAfter(rig, client, 5);
                final List<Client.Reading> readings = client.readings();
                System.out.println("disk NOT replicated (control): answers " +
                    readings.stream().map(Client.Reading::body).toList());
                assertThat(mismatches(readings)).as("without disk replication the resumed guest's disk is behind its RAM")
                    .isNotEmpty();
            }
        }
    }

    @Test
    void aStandbyDiskOfAnotherSizeIsRefusedNamingTheFileWhileTheGuestKeepsServingThenProtectionFollowsTheFix()
        throws Exception
    {
        try (Lab rig = new Lab(GUEST).withDisk(DISK_MIB))
        {
            final java.nio.file.Path standbyDisk = rig.diskImage("secondary");
            try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(standbyDisk.toFile(), "rw"))
            {
                f.setLength((DISK_MIB / 2) << 20);
            }
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200);
            rig.bootPrimary(how);
            rig.startProtecting(how);
            try (Client client = new Client(rig.cli, "/cgi-bin/disk"))
            {
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (rig.secondary().lastError() == null || !rig.secondary().lastError().contains(standbyDisk.toString()))
                {
                    assertThat(System.nanoTime() - deadline).as("the secondary refused the disk: %s",
                        rig.secondary().lastError()).isNegative();
                    Thread.sleep(50);
                }
                final String why = rig.secondary().lastError();
                final int answered = client.values().size();
                Thread.sleep(2_000);
                System.out.println("refused: " + why + "; guest answers meanwhile: " + client.values());
                assertThat(why).contains("33554432 bytes").contains("67108864 bytes");
                assertThat(rig.primary().counters().checkpointsCompleted.get()).as("no checkpoint with a wrong disk")
                    .isZero();
                assertThat(client.values().size()).as("the guest keeps serving, unprotected").isGreaterThan(answered);

                try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(standbyDisk.toFile(), "rw"))
                {
                    f.setLength(DISK_MIB << 20); // the operator fixes it: protection follows by itself
                }
                while (rig.primary().counters().checkpointsCompleted.get() < 2)
                {
                    assertThat(System.nanoTime() - deadline).as("protected after the fix").isNegative();
                    Thread.sleep(50);
                }
                client.close();
                assertThat(mismatches(client.readings())).isEmpty();
            }
        }
    }
}
