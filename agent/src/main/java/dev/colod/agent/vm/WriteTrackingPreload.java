package dev.colod.agent.vm;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Arrays;
import java.util.Map;

/**
 * The LD_PRELOAD library that arms kernel write tracking inside QEMU ({@code src/main/native/colod-wp.c}, built
 * by Maven with gcc into the agent jar): unpacked next to the VM's runtime files and handed to QEMU through its
 * environment. ABI: {@code COLOD_WP_FILE} names the RAM file to track, {@code COLOD_WP_STATUS} the file where the
 * library reports "ok START LENGTH" or "error STEP: REASON" (read by {@link KernelWriteTracker#attach}).
 */
public final class WriteTrackingPreload
{
    public static final String LIBRARY = "libcolodwp.so";
    private static final String RESOURCE = "/native/" + LIBRARY;

    private WriteTrackingPreload()
    {
    }

    /** Where QEMU's library reports, for a VM whose runtime files are in {@code runDir}. */
    public static Path statusFile(final Path runDir)
    {
        return runDir.resolve("write-tracking.status");
    }

    /**
     * The environment that loads the library into a QEMU started for {@code ramFile}: unpacks it into
     * {@code runDir} (again if the jar's copy differs) and removes an old status file.
     */
    public static Map<String, String> environment(final Path runDir, final Path ramFile) throws IOException
    {
        final byte[] lib;
        try (InputStream in = WriteTrackingPreload.class.getResourceAsStream(RESOURCE))
        {
            if (in == null)
            {
                throw new IOException(LIBRARY + " is not in colod's jar (" + RESOURCE + "): the build compiles it with " +
                    "gcc from agent/src/main/native/colod-wp.c");
            }
            lib = in.readAllBytes();
        }
        Files.createDirectories(runDir);
        final Path target = runDir.resolve(LIBRARY);
        if (!Files.exists(target) || !Arrays.equals(Files.readAllBytes(target), lib))
        {
            final Path tmp = runDir.resolve(LIBRARY + ".tmp");
            Files.write(tmp, lib);
            Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("rwxr-xr-x"));
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }
        Files.deleteIfExists(statusFile(runDir));
        // the library compares with what /proc/self/fd shows: the real path
        final Path dir = Files.createDirectories(ramFile.toAbsolutePath().getParent()).toRealPath();
        return Map.of("LD_PRELOAD", target.toString(), "COLOD_WP_FILE", dir.resolve(ramFile.getFileName()).toString(),
            "COLOD_WP_STATUS", statusFile(runDir).toString());
    }
}
