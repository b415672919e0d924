package dev.colod.agent.vm;

import java.io.IOException;
import java.nio.file.FileStore;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Guest RAM on 2 MiB pages ({@code ram-page-size: 2m}): what the host must offer before QEMU maps it — a hugetlbfs
 * mount with 2 MiB pages, and as many free 2 MiB pages as the guest has RAM (a shared hugetlbfs mapping reserves
 * them all when QEMU maps the file; without them QEMU fails to start with a less helpful message).
 */
public final class HugePages
{
    public static final long SIZE = 2L << 20;
    static final Path FREE = Path.of("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");

    private HugePages()
    {
    }

    /** The page size of the file system {@code p} is on: a hugetlbfs mount's, else 4096. */
    public static long pageBytes(final Path p) throws IOException
    {
        final FileStore fs = Files.getFileStore(p);
        return "hugetlbfs".equals(fs.type()) ? fs.getBlockSize() : GuestRam.PAGE;
    }

    /**
     * Why a RAM file of {@code bytes} cannot be created in {@code dir} (named {@code key} in colod.yaml) on 2 MiB pages,
     * or null if it can. An existing {@code file} of that size already holds its pages.
     */
    public static String problem(final String key, final Path dir, final Path file, final long bytes)
    {
        if (!Files.isDirectory(dir))
        {
            return key + ": " + dir + " does not exist (mount hugetlbfs there: mount -t hugetlbfs -o pagesize=2M none " +
                dir + ")";
        }
        try
        {
            final FileStore fs = Files.getFileStore(dir);
            if (!"hugetlbfs".equals(fs.type()))
            {
                return key + ": " + dir + " is on " + fs.type() + ", not hugetlbfs (mount -t hugetlbfs -o pagesize=2M " +
                    "none " + dir + ")";
            }
            final long page = pageBytes(dir);
            if (page != SIZE)
            {
                return key + ": " + dir + " is hugetlbfs with " + page / 1024 + " KiB pages, not 2048 KiB " +
                    "(mount it with -o pagesize=2M)";
            }
            if (Files.isRegularFile(file) && Files.size(file) >= bytes)
            {
                return null;
            }
            final long need = (bytes + SIZE - 1) / SIZE;
            // (not readString: it reads one byte, then the rest from offset 1, which a sysctl file answers with EOF)
            final long free = Long.parseLong(Files.readAllLines(FREE).get(0).trim());
            if (free < need)
            {
                return key + ": the guest's " + (bytes >> 20) + " MiB need " + need + " free 2 MiB pages, this host has " +
                    free + " (" + FREE + "; reserve more with sysctl vm.nr_hugepages)";
            }
            return null;
        }
        catch (final IOException | NumberFormatException ex)
        {
            return key + ": cannot check " + dir + " for 2 MiB pages: " + ex;
        }
    }
}
