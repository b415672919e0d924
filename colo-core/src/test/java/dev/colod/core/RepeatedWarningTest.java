package dev.colod.core;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** A warning that recurs at every reconnect is said once, then once a minute with a count, and when it ends. */
class RepeatedWarningTest
{
    private long now;
    private final List<String> said = new ArrayList<>();
    private final RepeatedWarning w = new RepeatedWarning(() -> now, said::add);

    @Test
    void saidOnceThenOnceAMinuteWithHowOftenItRecurred()
    {
        for (int i = 0; i < 120; i++) // a reconnect every second for two minutes
        {
            w.warn("cannot protect: connect to secondary 198.19.0.2:7600 failed: No route to host");
            now += 1_000_000_000L;
        }
        assertThat(said).containsExactly(
            "cannot protect: connect to secondary 198.19.0.2:7600 failed: No route to host",
            "cannot protect: connect to secondary 198.19.0.2:7600 failed: No route to host (again 60 times in the last 60 s)");
        w.clear();
        assertThat(said).hasSize(3);
        assertThat(said.get(2)).endsWith("(again 59 times in the last 60 s)");
    }

    @Test
    void aDifferentWarningIsSaidAtOnceAfterTheCountOfTheOneBefore()
    {
        w.warn("a");
        w.warn("a");
        now += 2_000_000_000L;
        w.warn("b");
        w.clear();
        assertThat(said).containsExactly("a", "a (again 1 time in the last 2 s)", "b");
    }
}
