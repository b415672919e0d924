package dev.colod.lab;

import dev.colod.core.ColoConfig;
import dev.colod.lab.FaultMatrix.Fault;
import dev.colod.lab.FaultMatrix.Result;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A few cells of the fault matrix (docs/RELIABILITY.md) on every CI run, with the control that shows the arbiter
 * is what keeps a cut link from running two copies. The whole matrix, 20 runs a cell: deploy/fault-matrix.sh.
 */
class FaultMatrixTest
{
    @BeforeAll
    static void prerequisites()
    {
        FailoverEndToEndTest.requireLab();
    }

    private static Result run(final Fault f, final ColoConfig.Mode m, final boolean arbitrated) throws Exception
    {
        final Result r = FaultMatrix.run(FailoverEndToEndTest.GUEST, f, m, arbitrated, System.nanoTime());
        System.out.println("fault matrix: " + r);
        return r;
    }

    @Test
    void aCutReplicationLinkRunsOneCopyWithTheArbiterAndTwoWithout() throws Exception
    {
        // both sides lose each other in the same heartbeat timeout and race one compare-and-swap in etcd (the
        // primary with a head start): exactly one copy runs, whichever won
        final Result arbitrated = run(Fault.LINK_CUT_BOTH_WAYS, ColoConfig.Mode.STRICT, true);
        assertThat(arbitrated.violations()).isEmpty();
        assertThat(arbitrated.runsNow()).isIn("primary", "secondary");
        assertThat(arbitrated.failoverMs() >= 0).as("failed over exactly when the secondary runs it")
            .isEqualTo("secondary".equals(arbitrated.runsNow()));

        // control: arbiter none, same fault: the secondary fails over while the primary serves on
        final Result control = run(Fault.LINK_CUT_BOTH_WAYS, ColoConfig.Mode.STRICT, false);
        assertThat(control.violations()).as("without an arbiter a cut link runs two copies").isNotEmpty();
    }

    @Test
    void aKilledPrimaryHostFailsOverWithoutWaitingForItsLease() throws Exception
    {
        final Result r = run(Fault.PRIMARY_HOST_KILLED, ColoConfig.Mode.SPECULATIVE, true);
        assertThat(r.violations()).isEmpty();
        assertThat(r.runsNow()).isEqualTo("secondary");
        assertThat(r.failoverMs()).isPositive();
    }

    @Test
    void aPrimaryCutFromEverythingComesBackFencedAndTheStoreAloneChangesNothing() throws Exception
    {
        final Result isolated = run(Fault.PRIMARY_CUT_FROM_EVERYTHING, ColoConfig.Mode.STRICT, true);
        assertThat(isolated.violations()).isEmpty();
        assertThat(isolated.runsNow()).isEqualTo("secondary");

        final Result etcd = run(Fault.ETCD_KILLED, ColoConfig.Mode.SPECULATIVE, true);
        assertThat(etcd.violations()).isEmpty();
        assertThat(etcd.runsNow()).isEqualTo("primary");
    }
}
