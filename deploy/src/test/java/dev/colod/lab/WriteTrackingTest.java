package dev.colod.lab;

import dev.colod.agent.vm.QemuStateSource;
import dev.colod.core.spi.StateCapture;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import dev.colod.os.Netns;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Kernel write tracking, audited with a real guest writing hard (the churn CGI rewrites 16 MiB of its tmpfs in a
 * loop while a client increments the HTTP counter): at every checkpoint, with the VM paused, every page whose
 * bytes differ from the previous checkpoint's must be among the pages the tracker reported. The audit bites: the
 * same run with one reported region dropped per checkpoint finds the pages that were left out.
 */
class WriteTrackingTest
{
    private static final int ROUNDS = 25;

    @BeforeEach
    void usable()
    {
        new FailoverEndToEndTest().usable();
    }

    /** What one audited run saw. */
    record Audit(int checkpoints, long reported, long changed, List<String> missed, long productAuditMisses,
                 long productAudited)
    {
    }

    /** {@code hugePages}: the guest's RAM on 2 MiB pages ({@code ram-page-size: 2m}). */
    private static Audit run(final boolean dropOneRegion, final boolean hugePages) throws Exception
    {
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            if (hugePages)
            {
                lab.hugePages();
            }
            lab.bootPrimary(TwoHostLab.Protection.of(100)); // QEMU with the write-tracking library; not protected
            final BitSet reported = new BitSet();
            final boolean[] dropNext = {false};
            final QemuStateSource source = new QemuStateSource(lab.qemu(),
                QemuStateSource.Tracking.KERNEL.filtered(out -> (first, count) ->
                {
                    if (dropNext[0])
                    {
                        dropNext[0] = false; // left out on purpose: the audit must notice
                        return;
                    }
                    reported.set((int)first, (int)(first + count));
                    out.region(first, count);
                }), (int)(lab.qemu().spec().memoryBytes() / 4096)); // colod's own audit: every page, every checkpoint
            assertThat(source.writeTracking()).isEqualTo("kernel");
            final int unit = (int)(source.ramPageBytes() / 4096); // 4 KiB pages per page of the guest's RAM
            assertThat(unit).as("pages of the RAM file, in 4 KiB").isEqualTo(hugePages ? 512 : 1);
            Netns.call(lab.cli, () -> TwoHostLab.Http.get(TwoHostLab.GUEST_IP, "/cgi-bin/churn", 10_000)); // the writer
            final long ramBytes = lab.qemu().spec().memoryBytes();
            final int pages = (int)(ramBytes / 4096);
            final ByteBuffer previous = ByteBuffer.allocateDirect((int)ramBytes);
            final MappedByteBuffer ram;
            try (FileChannel ch = FileChannel.open(lab.primaryRam(), StandardOpenOption.READ))
            {
                ram = ch.map(FileChannel.MapMode.READ_ONLY, 0, ramBytes);
            }
            long reportedTotal = 0;
            long changedTotal = 0;
            final List<String> missed = new ArrayList<>();
            try (Client client = new Client(lab.cli))
            {
                source.beginSession(1);
                for (int id = 1; id <= ROUNDS; id++)
                {
                    reported.clear();
                    dropNext[0] = dropOneRegion && id > 2;
                    source.pause();
                    try (StateCapture c = source.capture(id))
                    {
                        if (id > 1)
                        {
                            for (int p = 0; p < pages; p++)
                            {
                                if (ram.slice(p * 4096, 4096).mismatch(previous.slice(p * 4096, 4096)) >= 0)
                                {
                                    changedTotal++;
                                    if (!reported.get(p))
                                    {
                                        missed.add("checkpoint " + id + " page " + p);
                                    }
                                }
                            }
                            reportedTotal += reported.cardinality();
                            for (int r = reported.nextSetBit(0); r >= 0; r = reported.nextSetBit(reported.nextClearBit(r)))
                            {
                                final int end = reported.nextClearBit(r);
                                assertThat(r % unit == 0 && end % unit == 0).as("reported run [%d, %d) in whole pages " +
                                    "of %d KiB", r, end, unit * 4).isTrue();
                            }
                        }
                        previous.clear().put(ram.duplicate().clear()).clear();
                        c.writeTo(OutputStream.nullOutputStream(), done -> { });
                    }
                    source.resume();
                    Thread.sleep(40);
                }
                assertThat(client.values()).as("the guest served while being checkpointed").isNotEmpty();
            }
            source.close();
            return new Audit(ROUNDS, reportedTotal, changedTotal, missed, source.auditMisses(), source.auditedPages());
        }
    }

    @Test
    void everyPageTheGuestChangedIsAmongThePagesTheKernelReported() throws Exception
    {
        final Audit a = run(false, false);
        assertComplete(a, "");
    }

    /** The same on 2 MiB pages (hugetlbfs): the kernel reports whole 2 MiB pages, and none is left out. */
    @Test
    void onTwoMiBPagesEveryChangedPageIsWithinAReportedHugePage() throws Exception
    {
        final Audit a = run(false, true);
        assertComplete(a, ", 2 MiB pages");
        assertThat(a.reported()).as("whole 2 MiB pages reported: more than what changed").isGreaterThan(a.changed());
    }

    @Test
    void onTwoMiBPagesTheAuditCatchesAReportedHugePageThatWasDropped() throws Exception
    {
        final Audit a = run(true, true);
        System.out.printf("write tracking audit, 2 MiB pages, one region dropped per checkpoint: %d pages missed%n",
            a.missed().size());
        assertThat(a.missed()).as("the audit notices pages left out").isNotEmpty();
        assertThat(a.productAuditMisses()).as("colod's own audit counts the same pages").isEqualTo(a.missed().size());
    }

    private static void assertComplete(final Audit a, final String what)
    {
        System.out.printf("write tracking audit%s: %d checkpoints, %d pages changed, %d reported, %d missed%n", what,
            a.checkpoints(), a.changed(), a.reported(), a.missed().size());
        assertThat(a.changed()).as("the guest wrote while it was checkpointed").isGreaterThan(1000);
        assertThat(a.missed()).as("changed pages the tracker did not report").isEmpty();
        assertThat(a.productAudited()).as("colod's audit re-read pages").isPositive();
        assertThat(a.productAuditMisses()).as("colod's audit found nothing either").isZero();
    }

    @Test
    void theAuditCatchesAReportedRegionThatWasDropped() throws Exception
    {
        final Audit a = run(true, false);
        System.out.printf("write tracking audit, one region dropped per checkpoint: %d pages missed%n", a.missed().size());
        assertThat(a.missed()).as("the audit notices pages left out").isNotEmpty();
        assertThat(a.productAuditMisses()).as("colod's own audit (all pages each checkpoint) counts the same pages")
            .isEqualTo(a.missed().size());
    }
}
