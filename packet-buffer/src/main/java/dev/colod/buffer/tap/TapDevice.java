package dev.colod.buffer.tap;

import dev.colod.os.LibC;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.unix.FileDescriptor;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

/**
 * A TAP device owned by this process: opened non-blocking on {@code /dev/net/tun} with IFF_TAP|IFF_NO_PI,
 * not persistent, so the kernel removes it when the last descriptor closes (also when the agent crashes).
 * One read returns one Ethernet frame; one write sends one.
 */
public final class TapDevice implements AutoCloseable
{
    // linux/if_tun.h
    private static final long TUNSETIFF = 0x400454caL;
    private static final short IFF_TAP = 0x0002;
    private static final short IFF_NO_PI = 0x1000;
    // linux/if.h: IFNAMSIZ 16, struct ifreq is 40 bytes on x86_64; flags (short) at offset 16
    private static final int IFNAMSIZ = 16;
    private static final int IFREQ_SIZE = 40;

    private final String name;
    private final FileDescriptor fd;

    private TapDevice(final String name, final FileDescriptor fd)
    {
        this.name = name;
        this.fd = fd;
    }

    public static TapDevice open(final String name) throws IOException
    {
        final byte[] nameBytes = name.getBytes(StandardCharsets.US_ASCII);
        if (nameBytes.length == 0 || nameBytes.length >= IFNAMSIZ)
        {
            throw new IOException("tap name '" + name + "' must be 1.." + (IFNAMSIZ - 1) + " characters");
        }
        Epoll.ensureAvailability();
        final int fd = LibC.open("/dev/net/tun", LibC.O_RDWR | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException("open(/dev/net/tun) for tap " + name + " failed: " + LibC.lastError());
        }
        final byte[] ifr = new byte[IFREQ_SIZE];
        System.arraycopy(nameBytes, 0, ifr, 0, nameBytes.length);
        final short flags = IFF_TAP | IFF_NO_PI;
        // native byte order (little-endian on x86_64)
        ifr[IFNAMSIZ] = (byte)flags;
        ifr[IFNAMSIZ + 1] = (byte)(flags >> 8);
        if (LibC.ioctl(fd, TUNSETIFF, ifr) < 0)
        {
            final String err = LibC.lastError();
            LibC.close(fd);
            throw new IOException("ioctl(TUNSETIFF) for tap " + name + " failed: " + err);
        }
        int len = 0;
        while (len < IFNAMSIZ && ifr[len] != 0)
        {
            len++;
        }
        return new TapDevice(new String(ifr, 0, len, StandardCharsets.US_ASCII), new FileDescriptor(fd));
    }

    public String name()
    {
        return name;
    }

    public FileDescriptor fd()
    {
        return fd;
    }

    public static boolean isAvailable()
    {
        return unavailabilityCause() == null;
    }

    /** Why TAP devices cannot be used here, or null. */
    public static String unavailabilityCause()
    {
        if (!Epoll.isAvailable())
        {
            return "Netty epoll is not available: " + Epoll.unavailabilityCause();
        }
        if (!new File("/dev/net/tun").exists())
        {
            return "/dev/net/tun does not exist (tun module not loaded?)";
        }
        try (TapDevice probe = open("coloprobe" + (ProcessHandle.current().pid() % 100000)))
        {
            return null;
        }
        catch (final IOException | RuntimeException | LinkageError ex)
        {
            return ex.getMessage();
        }
    }

    @Override
    public void close()
    {
        try
        {
            fd.close();
        }
        catch (final IOException ignore)
        {
            // already closed
        }
    }

    @Override
    public String toString()
    {
        return "tap " + name;
    }
}
