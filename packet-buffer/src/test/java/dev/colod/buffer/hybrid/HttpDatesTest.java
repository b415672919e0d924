package dev.colod.buffer.hybrid;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;

import static dev.colod.buffer.hybrid.HttpDates.Result.DIFFERS;
import static dev.colod.buffer.hybrid.HttpDates.Result.INCOMPLETE;
import static dev.colod.buffer.hybrid.HttpDates.Result.SAME;
import static dev.colod.buffer.hybrid.HttpDates.Result.TOLERATED;
import static org.assertj.core.api.Assertions.assertThat;

/** Which differences between the two guests' bytes are HTTP Date values within the tolerance, and which are not. */
class HttpDatesTest
{
    private static String answer(final String date, final String body)
    {
        return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: " + date + "\r\nConnection: close\r\n\r\n" + body;
    }

    private static HttpDates.Result compare(final String a, final String b, final long toleranceMs)
    {
        final byte[] x = a.getBytes(StandardCharsets.US_ASCII);
        final byte[] y = b.getBytes(StandardCharsets.US_ASCII);
        assertThat(x.length).isEqualTo(y.length);
        return HttpDates.compare(x, 0, y, 0, x.length, toleranceMs);
    }

    @Test
    void datesASecondApartAreToleratedAndNothingElseIs()
    {
        final String a = answer("Thu, 03 Dec 2026 18:59:59 GMT", "counter 41\n");
        final String b = answer("Thu, 03 Dec 2026 19:00:00 GMT", "counter 41\n");
        assertThat(compare(a, a, 1000)).isEqualTo(SAME);
        assertThat(compare(a, b, 1000)).isEqualTo(TOLERATED);
        assertThat(compare(a, b, 0)).as("tolerance 0: byte for byte").isEqualTo(DIFFERS);
        assertThat(compare(a, answer("Thu, 03 Dec 2026 19:00:05 GMT", "counter 41\n"), 1000)).as("5 s apart")
            .isEqualTo(DIFFERS);
        assertThat(compare(a, answer("Thu, 03 Dec 2026 19:00:00 GMT", "counter 42\n"), 1000)).as("and the body")
            .isEqualTo(DIFFERS);
        assertThat(compare(a.replace("Date:", "date:"), b.replace("Date:", "date:"), 1000)).as("names are case-blind")
            .isEqualTo(TOLERATED);
    }

    @Test
    void onlyAWholeDateLineInTheRangeCounts()
    {
        // another header with a date in it is compared byte for byte
        assertThat(compare("HTTP/1.1 200 OK\r\nExpires: Thu, 03 Dec 2026 18:59:59 GMT\r\n",
            "HTTP/1.1 200 OK\r\nExpires: Thu, 03 Dec 2026 19:00:00 GMT\r\n", 1000)).isEqualTo(DIFFERS);
        // the line's start is not in the range: nothing tells it is a Date line
        assertThat(compare("Thu, 03 Dec 2026 18:59:59 GMT\r\n", "Thu, 03 Dec 2026 19:00:00 GMT\r\n", 1000))
            .isEqualTo(DIFFERS);
        // the range ends inside the value: more bytes decide
        final String a = answer("Thu, 03 Dec 2026 18:59:59 GMT", "");
        final String b = answer("Thu, 03 Dec 2026 19:00:00 GMT", "");
        final int cut = a.indexOf("GMT");
        assertThat(compare(a.substring(0, cut), b.substring(0, cut), 1000)).isEqualTo(INCOMPLETE);
        // not an IMF-fixdate
        assertThat(compare("X\r\nDate: Thursday, 03-Dec-26 18:59:59 GMT\r\n", "X\r\nDate: Thursday, 03-Dec-26 19:00:00 GMT\r\n",
            1000)).isEqualTo(DIFFERS);
        assertThat(compare("X\r\nDate: Thu, 03 Dec 2026 18:59:59 UTC\r\n", "X\r\nDate: Thu, 03 Dec 2026 19:00:00 UTC\r\n",
            1000)).isEqualTo(DIFFERS);
        // two Date lines, both a second apart, and the same elsewhere
        final String twoA = "X\r\nDate: Thu, 03 Dec 2026 18:59:59 GMT\r\nY\r\nDate: Thu, 03 Dec 2026 18:59:59 GMT\r\nZ";
        final String twoB = "X\r\nDate: Thu, 03 Dec 2026 19:00:00 GMT\r\nY\r\nDate: Thu, 03 Dec 2026 19:00:00 GMT\r\nZ";
        assertThat(compare(twoA, twoB, 1000)).isEqualTo(TOLERATED);
        assertThat(compare(twoA, twoB.replace("Z", "W"), 1000)).isEqualTo(DIFFERS);
    }
}
