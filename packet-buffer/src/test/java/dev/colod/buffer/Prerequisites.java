package dev.colod.buffer;

import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * What a test needs from the machine (root, a kernel feature, a package). Run as root — CI and README's test
 * command — a missing prerequisite fails the test with its reason, so nothing passes by skipping; a non-root
 * developer's quick run skips it and prints why.
 */
public final class Prerequisites
{
    private Prerequisites()
    {
    }

    public static boolean isRoot()
    {
        return "root".equals(System.getProperty("user.name"));
    }

    /** Passes when {@code missing} is null; otherwise fails (as root) or skips (not root), naming what is missing. */
    public static void require(final String what, final String missing)
    {
        if (missing == null)
        {
            return;
        }
        if (isRoot())
        {
            fail("prerequisite missing for " + what + ": " + missing +
                " (as root nothing is skipped; deploy/test.sh installs what the tests need)");
        }
        System.out.println("SKIPPED (" + what + "): " + missing);
        assumeTrue(false, missing);
    }
}
