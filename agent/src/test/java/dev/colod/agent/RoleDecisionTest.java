package dev.colod.agent;

import dev.colod.agent.config.ColodConfig;
import org.junit.jupiter.api.Test;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;

import static dev.colod.agent.RoleDecision.Outcome;
import static dev.colod.agent.config.ColodConfig.Role.PRIMARY;
import static dev.colod.agent.config.ColodConfig.Role.SECONDARY;
import static org.assertj.core.api.Assertions.assertThat;

/** The start-up role, case by case. */
class RoleDecisionTest
{
    private final AtomicInteger asked = new AtomicInteger();

    private BooleanSupplier peer(final boolean runsIt)
    {
        return () ->
        {
            asked.incrementAndGet();
            return runsIt;
        };
    }

    private Outcome decide(final ColodConfig.Role configured, final ColodConfig.Role recorded, final boolean follow,
        final boolean fenced, final boolean qemu, final boolean peerRunsIt)
    {
        return RoleDecision.decide(new RoleDecision.Facts(configured, recorded, follow, fenced, qemu, peer(peerRunsIt)));
    }

    @Test
    void theRecordedRoleWinsOverTheConfiguredOne()
    {
        assertThat(decide(PRIMARY, SECONDARY, true, false, false, false)).isEqualTo(Outcome.SECONDARY);
        assertThat(decide(SECONDARY, PRIMARY, true, false, true, false)).isEqualTo(Outcome.PRIMARY);
        assertThat(decide(SECONDARY, null, false, true, false, true)).as("a secondary never looks at the fence")
            .isEqualTo(Outcome.SECONDARY);
    }

    @Test
    void aFencedPrimaryStandsByWhenRolesFollowTheVmAndIsRefusedWhenTheyAreFixed()
    {
        assertThat(decide(PRIMARY, PRIMARY, true, true, true, false)).isEqualTo(Outcome.SECONDARY_AFTER_FENCE);
        assertThat(decide(PRIMARY, null, false, true, true, false)).isEqualTo(Outcome.REFUSE_FENCED);
        assertThat(Outcome.SECONDARY_AFTER_FENCE.afterFailover()).isTrue();
    }

    @Test
    void thePeerIsAskedOnlyWhenThisHostRanTheVmAndItsQemuIsGone()
    {
        assertThat(decide(PRIMARY, PRIMARY, true, false, false, true)).isEqualTo(Outcome.SECONDARY_PEER_RUNS_IT);
        assertThat(asked).hasValue(1);
        assertThat(decide(PRIMARY, PRIMARY, true, false, false, false)).isEqualTo(Outcome.PRIMARY);
        assertThat(decide(PRIMARY, PRIMARY, true, false, true, true)).as("its QEMU still runs here: adopt it")
            .isEqualTo(Outcome.PRIMARY);
        assertThat(decide(PRIMARY, null, false, false, false, true)).as("a first start never asks")
            .isEqualTo(Outcome.PRIMARY);
        assertThat(asked).hasValue(2);
    }
}
