package dev.colod.lab;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** README's main job, non-interactive: fails if the client saw a repeat or if nothing was ever held. */
class TwoHostDemoTest
{
    @Test
    void demoKeepsTheCounterIncreasingThroughTheLossOfThePrimaryHost() throws Exception
    {
        new FailoverEndToEndTest().usable();
        assertThat(TwoHostDemo.run(FailoverEndToEndTest.GUEST, 4_000)).isZero();
    }
}
