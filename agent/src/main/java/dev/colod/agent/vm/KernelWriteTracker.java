package dev.colod.agent.vm;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import dev.colod.buffer.tap.LibC;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

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

    private final String vm;
    private final int pagemap;
    private final long start;
    private final long length;
    private final Memory arg = new Memory(ARG_BYTES);
    private final Memory vec = new Memory((long)REGIONS * REGION_BYTES);
    private long lastTrackNanos;

    private KernelWriteTracker(final String vm, final int pagemap, final long start, final long length)
    {
        this.vm = vm;
        this.pagemap = pagemap;
        this.start = start;
        this.length = length;
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

    /** One walk over the mapping, in as many calls as the region vector needs; {@code out} null discards. */
    private long scan(final Regions out) throws IOException
    {
        long pages = 0;
        long trackNanos = 0;
        long from = start;
        final long end = start + length;
        while (from < end)
        {
            arg.setLong(0, ARG_BYTES);
            arg.setLong(8, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC);
            arg.setLong(16, from);
            arg.setLong(24, end);
            arg.setLong(32, 0); // walk_end, out
            arg.setLong(40, Pointer.nativeValue(vec));
            arg.setLong(48, REGIONS);
            arg.setLong(56, 0); // max_pages: no limit
            arg.setLong(64, 0); // category_inverted
            arg.setLong(72, PAGE_IS_WRITTEN); // category_mask
            arg.setLong(80, 0); // category_anyof_mask
            arg.setLong(88, PAGE_IS_WRITTEN); // return_mask
            final long t0 = System.nanoTime();
            final int n = LibC.ioctl(pagemap, PAGEMAP_SCAN, arg);
            trackNanos += System.nanoTime() - t0;
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
        lastTrackNanos = trackNanos;
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
        LibC.close(pagemap);
    }
}
