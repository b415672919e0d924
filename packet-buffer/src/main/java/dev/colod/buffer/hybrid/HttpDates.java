package dev.colod.buffer.hybrid;

import java.nio.charset.StandardCharsets;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.Arrays;

/**
 * HTTP {@code Date} lines that the two guests wrote a moment apart (docs/ARCHITECTURE.md, "Hybrid mode",
 * normalisation). An HTTP server stamps each answer with its clock to the second; the copy runs some milliseconds
 * behind the primary, so an answer made just after a second turned carries the next second on one side only, and
 * comparing it byte for byte asks for a checkpoint about once per second under load (BENCHMARKS.md, run S). The value
 * is the clock's, not the guest's state: like TCP's TSval, it may differ by up to a tolerance.
 * <p>
 * What is tolerated, exactly: every difference between the two byte ranges lies inside the value of a line
 * {@code Date: <IMF-fixdate>} (RFC 9110 section 5.6.7, 29 bytes, e.g. {@code Sun, 06 Nov 1994 08:49:37 GMT}) that
 * starts after a line feed and ends with CR LF inside both ranges, and the two dates are at most the tolerance apart.
 * Anything else that differs, a date in another format, or a line cut by the end of the range is not tolerated.
 */
final class HttpDates
{
    enum Result
    {
        /** Equal. */
        SAME,
        /** Different only in Date values within the tolerance. */
        TOLERATED,
        /** A difference that is not a tolerated Date value. */
        DIFFERS,
        /** A difference in the value of a Date line that the range ends inside of: more bytes decide. */
        INCOMPLETE
    }

    private static final byte[] NAME = "date: ".getBytes(StandardCharsets.US_ASCII);
    private static final int VALUE = 29;

    private HttpDates()
    {
    }

    /**
     * Compares {@code a[aOff, aOff+len)} with {@code b[bOff, bOff+len)} (see the class comment); {@code toleranceMs}
     * 0 tolerates nothing.
     */
    static Result compare(final byte[] a, final int aOff, final byte[] b, final int bOff, final int len,
        final long toleranceMs)
    {
        int from = 0;
        while (true)
        {
            final int m = Arrays.mismatch(a, aOff + from, aOff + len, b, bOff + from, bOff + len);
            if (m < 0)
            {
                return from == 0 ? Result.SAME : Result.TOLERATED;
            }
            if (toleranceMs <= 0)
            {
                return Result.DIFFERS;
            }
            final int at = from + m;
            int line = at;
            while (line > from && a[aOff + line - 1] != '\n')
            {
                line--;
            }
            final int value = line + NAME.length;
            final int end = value + VALUE;
            // the line must start in the range (after a line feed), be named Date, and differ in its value only
            if (line == 0 || a[aOff + line - 1] != '\n' || at < value || !named(a, aOff + line))
            {
                return Result.DIFFERS;
            }
            if (end + 2 > len)
            {
                return at < end ? Result.INCOMPLETE : Result.DIFFERS;
            }
            if (!crlf(a, aOff + end) || !crlf(b, bOff + end))
            {
                return Result.DIFFERS;
            }
            final long da = epochMillis(a, aOff + value);
            final long db = epochMillis(b, bOff + value);
            if (da == Long.MIN_VALUE || db == Long.MIN_VALUE || Math.abs(da - db) > toleranceMs)
            {
                return Result.DIFFERS;
            }
            from = end;
        }
    }

    /** Whether {@code b[at, at+6)} is "Date: " (the name in any case). */
    private static boolean named(final byte[] b, final int at)
    {
        for (int i = 0; i < NAME.length; i++)
        {
            final int c = b[at + i] >= 'A' && b[at + i] <= 'Z' ? b[at + i] + 32 : b[at + i];
            if (c != NAME[i])
            {
                return false;
            }
        }
        return true;
    }

    private static boolean crlf(final byte[] b, final int at)
    {
        return b[at] == '\r' && b[at + 1] == '\n';
    }

    /** The IMF-fixdate at {@code b[at, at+29)} in ms since the epoch, or Long.MIN_VALUE if it is not one. */
    private static long epochMillis(final byte[] b, final int at)
    {
        final String s = new String(b, at, VALUE, StandardCharsets.US_ASCII);
        if (!s.endsWith(" GMT") || s.charAt(3) != ',')
        {
            return Long.MIN_VALUE;
        }
        try
        {
            return ZonedDateTime.parse(s, DateTimeFormatter.RFC_1123_DATE_TIME).toInstant().toEpochMilli();
        }
        catch (final DateTimeParseException ex)
        {
            return Long.MIN_VALUE;
        }
    }
}
