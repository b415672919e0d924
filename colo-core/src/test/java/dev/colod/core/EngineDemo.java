package dev.colod.core;

import dev.colod.core.testing.EnginePair;

import java.util.Locale;

/**
 * Shows the protocol engine working end to end on this machine, until the two-host QEMU demo replaces it:
 * a primary and a secondary engine over loopback TCP protect an in-memory VM (16 MiB that a vCPU thread keeps
 * writing), then the primary dies without a word and the secondary fails over from its last committed
 * checkpoint. Exits non-zero if anything the invariants forbid happened.
 */
public final class EngineDemo
{
    public static void main(final String[] args) throws Exception
    {
        final int bytes = 16 << 20;
        System.out.println("colod engine demo: primary and secondary on loopback, 16 MiB in-memory VM, strict mode, " +
            "checkpoint every 50 ms");
        int failures = 0;
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT).checkpointDelayMs(50)
            .maxStateBytes(64L << 20), bytes, dev.colod.core.protocol.ProtocolTap.NONE,
            dev.colod.core.protocol.ProtocolTap.NONE))
        {
            for (int i = 0; i < 8; i++)
            {
                Thread.sleep(500);
                final var c = pair.primary.counters();
                System.out.printf(Locale.ROOT, "  primary %-9s checkpoints %4d  shipped %6.1f MiB  pause p50 %5d us p99 %5d us" +
                    "  | secondary %-9s committed %4d%n", pair.primary.state(), c.checkpointsCompleted.get(),
                    c.stateBytes.get() / 1048576.0, c.pauseMicros.getValueAtPercentile(50),
                    c.pauseMicros.getValueAtPercentile(99), pair.secondary.state(), pair.sink.lastCommitted());
            }
            System.out.println("killing the primary (no goodbye, as if its host died)...");
            final long releasedBefore = pair.output.maxCommitted();
            pair.primary.kill();
            final ExitEvent e = EnginePair.next(pair.secondaryExits, "secondary");
            final long committed = pair.sink.lastCommitted();
            System.out.println("secondary: " + e.detail());
            System.out.printf(Locale.ROOT, "secondary state %s, resumed from checkpoint %d; primary had released output up to " +
                "epoch %d%n", pair.secondary.state(), pair.sink.activatedAt(), releasedBefore);
            if (!e.failedOver() || pair.sink.activatedAt() != committed)
            {
                System.out.println("FAIL: the secondary did not resume from its last committed checkpoint");
                failures++;
            }
            if (releasedBefore > committed)
            {
                System.out.println("FAIL: output of an epoch the secondary never received was released");
                failures++;
            }
            if (!java.util.Arrays.equals(pair.sink.committed(), pair.vm.capturedAt(committed)))
            {
                System.out.println("FAIL: the standby image differs from the primary's state at that checkpoint");
                failures++;
            }
        }
        System.out.println(failures == 0 ? "OK: failover resumed the newest acknowledged checkpoint; nothing unacknowledged was released"
            : "FAILED: " + failures + " invariant(s) broken");
        System.exit(failures == 0 ? 0 : 1);
    }
}
