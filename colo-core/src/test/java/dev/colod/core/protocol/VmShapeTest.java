package dev.colod.core.protocol;

import dev.colod.core.ColoConfig;
import dev.colod.core.testing.EnginePair;
import org.junit.jupiter.api.Test;

import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.assertj.core.api.Assertions.assertThat;

/** A VM that differs between the hosts is refused at session start, with both values, on both sides (issue 24). */
class VmShapeTest
{
    @Test
    void differencesNameTheKeyAndBothValuesAndIgnoreKeysOnlyOneSideKnows()
    {
        final String secondary = VmShape.of(Map.of("memory-mib", "256"));
        assertThat(VmShape.differences(secondary, "accel=kvm memory-mib=128 vcpus=2"))
            .containsExactly("memory-mib: 256 on the secondary, 128 on the primary");
        assertThat(VmShape.differences("accel=kvm memory-mib=128", "accel=kvm memory-mib=128 newer-key=x")).isEmpty();
    }

    @Test
    void aSecondaryRefusesAPrimaryWhoseVmDiffersAndBothSidesSayWhy() throws Exception
    {
        final AtomicInteger calls = new AtomicInteger();
        // the pair asks for the secondary's configuration first, then the primary's
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT)
            .vmShape(calls.getAndIncrement() == 0 ? "accel=tcg memory-mib=128 vcpus=1" : "accel=kvm memory-mib=128 vcpus=1"),
            1 << 16, ProtocolTap.NONE, ProtocolTap.NONE))
        {
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!pair.primary.lastError().contains("shape"))
            {
                assertThat(System.nanoTime() - deadline).as("the primary learns why it was refused").isNegative();
                Thread.sleep(10);
            }
            assertThat(pair.primary.lastError()).contains("shape (vm vm-test differs between the hosts")
                .contains("accel: tcg on the secondary, kvm on the primary");
            assertThat(pair.secondary.lastError()).contains("accel: tcg on the secondary, kvm on the primary");
            assertThat(pair.primary.counters().checkpointsCompleted.get()).isZero();
            assertThat(pair.secondary.counters().refusedSessions.get()).isPositive();
        }
    }
}
