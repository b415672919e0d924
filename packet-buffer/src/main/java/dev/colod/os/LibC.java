package dev.colod.os;

import com.sun.jna.Native;
import com.sun.jna.Platform;

/**
 * The few libc calls needed to set devices up, bound by JNA direct mapping (about 80 ns a call). Per-frame
 * I/O does not come here: it goes through Netty's native {@code FileDescriptor}.
 */
public final class LibC
{
    static
    {
        Native.register(Platform.C_LIBRARY_NAME);
    }

    // asm-generic/fcntl.h
    public static final int O_RDONLY = 0x0;
    public static final int O_RDWR = 0x2;
    public static final int O_NONBLOCK = 0x800;
    public static final int O_CLOEXEC = 0x80000;
    // linux/sched.h
    public static final int CLONE_NEWNET = 0x40000000;

    private LibC()
    {
    }

    public static native int open(String path, int flags);

    public static native int ioctl(int fd, long request, byte[] arg);

    public static native int ioctl(int fd, long request, com.sun.jna.Pointer arg);

    public static native int close(int fd);

    /** fallocate(2): reserves the blocks of [offset, offset + len) (mode 0), so later writes there never fail for space. */
    public static native int fallocate(int fd, int mode, long offset, long len);

    public static native int setns(int fd, int nstype);

    /** poll(2) over {@code nfds} {@code struct pollfd} (int fd, short events, short revents: 8 bytes each). */
    public static native int poll(com.sun.jna.Pointer fds, long nfds, int timeoutMs);

    // poll.h
    public static final short POLLIN = 0x1;

    public static native String strerror(int errnum);

    /** "EPERM (Operation not permitted)"-style text for the errno of the last native call on this thread. */
    public static String lastError()
    {
        final int errno = Native.getLastError();
        return errnoName(errno) + " (" + strerror(errno) + ")";
    }

    private static String errnoName(final int errno)
    {
        switch (errno)
        {
            case 1: return "EPERM";
            case 2: return "ENOENT";
            case 9: return "EBADF";
            case 13: return "EACCES";
            case 16: return "EBUSY";
            case 19: return "ENODEV";
            case 22: return "EINVAL";
            case 24: return "EMFILE";
            case 95: return "EOPNOTSUPP";
            default: return "errno " + errno;
        }
    }
}
