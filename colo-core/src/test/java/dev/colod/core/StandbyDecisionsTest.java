package dev.colod.core;

import org.junit.jupiter.api.Test;

import java.util.concurrent.atomic.AtomicInteger;

import static org.assertj.core.api.Assertions.assertThat;

/** The secondary's decisions, event by event, without a socket or a thread. */
class StandbyDecisionsTest
{
    private final FailoverState failover = new FailoverState();
    private final StandbyDecisions<String> d = new StandbyDecisions<>(failover);
    private final AtomicInteger made = new AtomicInteger();

    private StandbyDecisions.Admission<String> hello(final long token, final long newest)
    {
        return d.admit(token, newest, () -> "session-" + made.incrementAndGet());
    }

    private static SessionEnd.Outcome outcome(final SessionEnd.Next next, final ExitReason reason)
    {
        return new SessionEnd.Outcome(SessionEnd.Cause.PEER_LOST, reason, "test", next == SessionEnd.Next.FAIL_OVER,
            next, null);
    }

    @Test
    void aSessionIsAcceptedOnceAndASecondPrimaryIsBusy()
    {
        final var a = hello(3, 3);
        assertThat(a.answer()).isEqualTo(StandbyDecisions.Answer.ACCEPT);
        assertThat(a.session()).isEqualTo("session-1");
        d.protecting(a.session());
        assertThat(d.state()).isEqualTo(ProtectionState.PROTECTED);
        assertThat(hello(3, 3).answer()).isEqualTo(StandbyDecisions.Answer.BUSY);
        assertThat(made).as("no session made for a refused HELLO").hasValue(1);
    }

    @Test
    void anOlderTokenIsStaleAndARunningVmAnswersFailedOverWhateverTheToken()
    {
        assertThat(hello(2, 5).answer()).isEqualTo(StandbyDecisions.Answer.STALE_TOKEN);
        assertThat(d.operatorFailover()).isEqualTo(StandbyDecisions.Request.CLAIM);
        assertThat(d.resuming()).isTrue();
        d.resumed();
        assertThat(d.state()).isEqualTo(ProtectionState.FAILED_OVER);
        assertThat(hello(99, 5).answer()).isEqualTo(StandbyDecisions.Answer.FAILED_OVER);
        assertThat(d.runsHere()).isTrue();
    }

    @Test
    void aLostPrimaryMeansAClaimThenAResume()
    {
        final String s = hello(1, 1).session();
        d.protecting(s);
        final var ended = d.ended(s, outcome(SessionEnd.Next.FAIL_OVER, ExitReason.ERROR), 5000);
        assertThat(ended.next()).isEqualTo(StandbyDecisions.Next.CLAIM);
        final long gen = d.claimStarted();
        assertThat(d.state()).isEqualTo(ProtectionState.FAILING_OVER);
        assertThat(d.claimWanted(gen)).isTrue();
        assertThat(d.claimGranted(gen)).isTrue();
        assertThat(d.resuming()).isTrue();
        d.resumed();
        assertThat(d.state()).isEqualTo(ProtectionState.FAILED_OVER);
        assertThat(d.stop()).isNull();
        assertThat(d.state()).as("a VM that runs here stays failed over").isEqualTo(ProtectionState.FAILED_OVER);
    }

    @Test
    void aPrimaryThatComesBackDuringTheClaimCallsItOffAndIsProtectedAgain()
    {
        final String s = hello(1, 1).session();
        d.ended(s, outcome(SessionEnd.Next.FAIL_OVER, ExitReason.ERROR), 5000);
        final long gen = d.claimStarted();
        final var back = hello(1, 1);
        assertThat(back.answer()).isEqualTo(StandbyDecisions.Answer.ACCEPT);
        assertThat(back.claimAbandoned()).isTrue();
        assertThat(d.claimWanted(gen)).isFalse();
        assertThat(d.claimGranted(gen)).as("a late grant is resigned").isFalse();
        assertThat(d.resuming()).isFalse();
        d.protecting(back.session());
        assertThat(d.state()).isEqualTo(ProtectionState.PROTECTED);
    }

    @Test
    void theGracePeriodFailsOverOnlyIfNothingCameBack()
    {
        final String s = hello(1, 1).session();
        final var ended = d.ended(s, outcome(SessionEnd.Next.AWAIT_PEER, ExitReason.ERROR), 3000);
        assertThat(ended.next()).isEqualTo(StandbyDecisions.Next.GRACE);
        assertThat(d.state()).isEqualTo(ProtectionState.CONNECTING);
        final String again = hello(1, 1).session();
        assertThat(d.graceExpired(ended.graceToken())).as("its agent came back").isFalse();
        final var second = d.ended(again, outcome(SessionEnd.Next.AWAIT_PEER, ExitReason.ERROR), 3000);
        assertThat(d.graceExpired(ended.graceToken())).as("an older grace period").isFalse();
        assertThat(d.graceExpired(second.graceToken())).isTrue();
        assertThat(failover.isPending()).isTrue();
    }

    @Test
    void withoutAGracePeriodAGoneAgentIsAFailoverAtOnce()
    {
        final String s = hello(1, 1).session();
        assertThat(d.ended(s, outcome(SessionEnd.Next.AWAIT_PEER, ExitReason.ERROR), 0).next())
            .isEqualTo(StandbyDecisions.Next.CLAIM);
    }

    @Test
    void anOperatorsFailoverEndsTheSessionOrClaimsAndIsAskedOnce()
    {
        final String s = hello(1, 1).session();
        assertThat(d.operatorFailover()).isEqualTo(StandbyDecisions.Request.END_SESSION);
        assertThat(d.operatorFailover()).as("already required").isEqualTo(StandbyDecisions.Request.NONE);
        assertThat(d.ended(s, outcome(SessionEnd.Next.FAIL_OVER, ExitReason.REQUEST), 0).next())
            .isEqualTo(StandbyDecisions.Next.CLAIM);
    }

    @Test
    void nothingToResumeStandsByAgain()
    {
        d.operatorFailover();
        assertThat(d.resuming()).isTrue();
        d.resumeFailed();
        assertThat(d.state()).isEqualTo(ProtectionState.CONNECTING);
        assertThat(failover.phase()).isEqualTo(FailoverState.Phase.NONE);
        assertThat(d.operatorFailover()).as("may be asked again").isEqualTo(StandbyDecisions.Request.CLAIM);
    }

    @Test
    void stoppingCallsOffEverythingAndRefusesNewSessions()
    {
        final String s = hello(1, 1).session();
        assertThat(d.stop()).isEqualTo(s);
        assertThat(d.state()).isEqualTo(ProtectionState.STOPPED);
        assertThat(d.ended(s, outcome(SessionEnd.Next.FAIL_OVER, ExitReason.ERROR), 0).next())
            .as("a session that ends because of the stop does not fail over").isEqualTo(StandbyDecisions.Next.STAND_BY);
        assertThat(hello(1, 1).answer()).isEqualTo(StandbyDecisions.Answer.BUSY);
        assertThat(failover.phase()).isEqualTo(FailoverState.Phase.NONE);
        assertThat(d.operatorFailover()).isEqualTo(StandbyDecisions.Request.NONE);
        assertThat(d.state()).isEqualTo(ProtectionState.STOPPED);
    }

    @Test
    void aStopDuringAResumeEndsFailedOverBecauseTheVmRuns()
    {
        d.operatorFailover();
        assertThat(d.resuming()).isTrue();
        d.stop();
        d.resumed();
        assertThat(d.state()).isEqualTo(ProtectionState.FAILED_OVER);
    }

    @Test
    void everyMoveTheEngineMakesIsInTheTableAndFinalStatesHaveNone()
    {
        assertThat(StandbyDecisions.MOVES.get(ProtectionState.FAILED_OVER)).isEmpty();
        assertThat(StandbyDecisions.MOVES.get(ProtectionState.STOPPED)).isEmpty();
        assertThat(StandbyDecisions.MOVES).doesNotContainKeys(ProtectionState.UNPROTECTED, ProtectionState.FENCED);
    }
}
