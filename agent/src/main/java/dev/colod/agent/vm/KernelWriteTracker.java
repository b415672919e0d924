package dev.colod.agent.vm;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import dev.colod.os.LibC;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Written pages from the kernel: QEMU's guest-RAM mapping is registered (inside QEMU, by the LD_PRELOAD library
 * {@code libcolodwp.so}, see {@link WriteTrackingPreload}) with a userfaultfd in asynchronous write-protect mode;
 * the kernel then marks each page on its first write. This class asks QEMU's page tables from outside with
 * {@code ioctl(PAGEMAP_SCAN)} on {@code /proc/<qemu>/pagemap}: "pages written" ({@code PAGE_IS_WRITTEN}), and
 * in the same call write-protects them again ({@code PM_SCAN_WP_MATCHING}), so nothing written between the
 * answer and the re-arming can be lost. Cost follows what the guest wrote, not how big it is; no copy of RAM.
 * <p>
 * Linux 6.7+ (PAGEMAP_SCAN, UFFD_FEATURE_WP_ASYNC). Under KVM, guest writes reach these page tables through
 * KVM's write faults and the re-protection notifies KVM (MMU notifier); this machine kind can only verify TCG.
 */
public final class KernelWriteTracker implements WrittenPages
{
    // linux/fs.h (6.7+; not in Debian 12's headers): PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg)
    static final long PAGEMAP_SCAN = 0xC0606610L;
    static final long PM_SCAN_WP_MATCHING = 1L;
    static final long PM_SCAN_CHECK_WPASYNC = 1L << 1;
    static final long PAGE_IS_WRITTEN = 1L << 1;
    /** struct pm_scan_arg: 12 x u64. */
    private static final int ARG_BYTES = 96;
    /** struct page_region: start, end, categories (u64 each). */
    private static final int REGION_BYTES = 24;
    private static final int REGIONS = 8192;

    /**
     * Below this much RAM one walk is about as quick as handing slices to other threads (~0.2 ms for 128 MiB);
     * above, the walk grows with RAM (~2.2 ms per GiB here) and is shared.
     */
    private static final long SLICED_FROM = 64L << 20;

    private final String vm;
    private final int pagemap;
    private final long start;
    private final long length;
    /** The walk's slices: the first is walked by the caller, the others by {@link #walkers} at the same time. */
    private final Slice[] slices;
    private final ExecutorService walkers;
    private long lastTrackNanos;

    /** One slice of the mapping with its own ioctl argument, region vector and (for the later ones) results. */
    private static final class Slice
    {
        final long from;
        final long end;
        final Memory arg = new Memory(ARG_BYTES);
        final Memory vec = new Memory((long)REGIONS * REGION_BYTES);
        /** Runs found, as (first page, count) pairs, kept until the earlier slices' runs are out. */
        long[] runs = new long[256];
        int runCount;

        Slice(final long from, final long end)
        {
            this.from = from;
            this.end = end;
        }

        void keep(final long firstPage, final long count)
        {
            if (2 * runCount + 2 > runs.length)
            {
                runs = Arrays.copyOf(runs, runs.length * 2);
            }
            runs[2 * runCount] = firstPage;
            runs[2 * runCount + 1] = count;
            runCount++;
        }
    }

    private KernelWriteTracker(final String vm, final int pagemap, final long start, final long length)
    {
        this.vm = vm;
        this.pagemap = pagemap;
        this.start = start;
        this.length = length;
        // page tables of a large guest are walked on every core at once (QEMU's own work at the pause is short)
        final int n = length < SLICED_FROM ? 1 : Math.max(1, Math.min(4, Runtime.getRuntime().availableProcessors()));
        final long per = (length / GuestRam.PAGE + n - 1) / n * GuestRam.PAGE;
        slices = new Slice[n];
        for (int i = 0; i < n; i++)
        {
            slices[i] = new Slice(start + i * per, Math.min(start + length, start + (i + 1) * per));
        }
        walkers = n == 1 ? null : Executors.newFixedThreadPool(n - 1, r ->
        {
            final Thread t = new Thread(r, "colod-" + vm + "-pagemap-scan");
            t.setDaemon(true);
            return t;
        });
    }

    /**
     * Attaches to QEMU {@code pid}, whose preload library reported in {@code status} how registering its RAM
     * mapping of {@code ramBytes} went. Throws, naming the step, when the kernel or the mapping does not allow it.
     */
    public static KernelWriteTracker attach(final String vm, final long pid, final Path status, final long ramBytes)
        throws IOException
    {
        if (!Files.exists(status))
        {
            throw new IOException("vm " + vm + ": kernel write tracking: QEMU (pid " + pid + ") never mapped its RAM " +
                "file shared and writable with " + WriteTrackingPreload.LIBRARY + " loaded (no " + status + ")");
        }
        final String line = Files.readString(status).trim();
        if (!line.startsWith("ok "))
        {
            throw new IOException("vm " + vm + ": kernel write tracking refused inside QEMU (pid " + pid + "): " +
                line.replaceFirst("^error ", ""));
        }
        final String[] f = line.split(" ");
        final long start = Long.parseUnsignedLong(f[1], 16);
        final long length = Long.parseLong(f[2]);
        if (length < ramBytes)
        {
            throw new IOException("vm " + vm + ": kernel write tracking covers " + length + " bytes, the VM has " + ramBytes);
        }
        final String path = "/proc/" + pid + "/pagemap";
        final int fd = LibC.open(path, LibC.O_RDONLY | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException("vm " + vm + ": open(" + path + ") failed: " + LibC.lastError());
        }
        final KernelWriteTracker t = new KernelWriteTracker(vm, fd, start, ramBytes);
        try
        {
            t.scan(null); // proves PAGEMAP_SCAN works here and starts tracking afresh
        }
        catch (final IOException ex)
        {
            t.close();
            throw ex;
        }
        return t;
    }

    @Override
    public String method()
    {
        return "kernel";
    }

    @Override
    public void restart() throws IOException
    {
        scan(null);
    }

    @Override
    public long collect(final Regions out) throws IOException
    {
        return scan(out);
    }

    /**
     * One walk over the mapping, its slices at the same time, each in as many calls as its region vector needs;
     * {@code out} (null discards) gets the runs in page order.
     */
    private long scan(final Regions out) throws IOException
    {
        final long t0 = System.nanoTime();
        final List<Future<Long>> later = new ArrayList<>(slices.length - 1);
        for (int i = 1; i < slices.length; i++)
        {
            final Slice sl = slices[i];
            sl.runCount = 0;
            later.add(walkers.submit(() -> walk(sl, out == null ? null : sl::keep)));
        }
        long pages = 0;
        IOException failed = null;
        try
        {
            pages = walk(slices[0], out);
        }
        catch (final IOException ex)
        {
            failed = ex;
        }
        for (int i = 1; i < slices.length; i++)
        {
            try
            {
                pages += later.get(i - 1).get();
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
                failed = failed != null ? failed : new IOException("vm " + vm + ": interrupted while scanning pagemap", ex);
            }
            catch (final ExecutionException ex)
            {
                failed = failed != null ? failed : ex.getCause() instanceof IOException io ? io
                    : new IOException("vm " + vm + ": scanning pagemap failed: " + ex.getCause(), ex.getCause());
            }
        }
        if (failed != null)
        {
            throw failed;
        }
        if (out != null)
        {
            for (int i = 1; i < slices.length; i++)
            {
                final Slice sl = slices[i];
                for (int r = 0; r < sl.runCount; r++)
                {
                    out.region(sl.runs[2 * r], sl.runs[2 * r + 1]);
                }
            }
        }
        lastTrackNanos = System.nanoTime() - t0;
        return pages;
    }

    /** Walks one slice; runs go to {@code out} (null: discarded). */
    private long walk(final Slice sl, final Regions out) throws IOException
    {
        long pages = 0;
        long from = sl.from;
        final Memory arg = sl.arg;
        final Memory vec = sl.vec;
        while (from < sl.end)
        {
            arg.setLong(0, ARG_BYTES);
            arg.setLong(8, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC);
            arg.setLong(16, from);
            arg.setLong(24, sl.end);
            arg.setLong(32, 0); // walk_end, out
            arg.setLong(40, Pointer.nativeValue(vec));
            arg.setLong(48, REGIONS);
            arg.setLong(56, 0); // max_pages: no limit
            arg.setLong(64, 0); // category_inverted
            arg.setLong(72, PAGE_IS_WRITTEN); // category_mask
            arg.setLong(80, 0); // category_anyof_mask
            arg.setLong(88, PAGE_IS_WRITTEN); // return_mask
            final int n = LibC.ioctl(pagemap, PAGEMAP_SCAN, arg);
            if (n < 0)
            {
                throw new IOException("vm " + vm + ": ioctl(PAGEMAP_SCAN) on QEMU's pagemap failed: " + LibC.lastError() +
                    " (needs Linux 6.7+ and a mapping registered for async write-protect)");
            }
            for (int i = 0; i < n; i++)
            {
                final long rs = vec.getLong((long)i * REGION_BYTES);
                final long re = vec.getLong((long)i * REGION_BYTES + 8);
                final long count = (re - rs) / GuestRam.PAGE;
                pages += count;
                if (out != null)
                {
                    out.region((rs - start) / GuestRam.PAGE, count);
                }
            }
            final long walkEnd = arg.getLong(32);
            if (walkEnd <= from)
            {
                throw new IOException("vm " + vm + ": ioctl(PAGEMAP_SCAN) made no progress at 0x" + Long.toHexString(from));
            }
            from = walkEnd;
        }
        return pages;
    }

    @Override
    public long lastTrackNanos()
    {
        return lastTrackNanos;
    }

    @Override
    public void close()
    {
        if (walkers != null)
        {
            walkers.shutdownNow();
        }
        LibC.close(pagemap);
    }
}
