package dev.colod.agent.control;

import org.HdrHistogram.Histogram;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Prometheus text exposition (format 0.0.4) of one scrape: metric families in the order they were declared, each
 * family's HELP and TYPE line followed by all of its samples (whatever order they were added in, e.g. VM by VM), so
 * a family never interleaves with another. Histograms come from HdrHistogram recordings in microseconds as
 * cumulative {@code _bucket{le}} counts in seconds, {@code _sum} and {@code _count}. Label values are escaped.
 */
final class Exposition
{
    /** Bucket bounds of pause histograms, seconds. */
    static final double[] PAUSE_BUCKETS = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};

    private final Map<String, Family> families = new LinkedHashMap<>();

    private static final class Family
    {
        final String help;
        final String type;
        final List<String> samples = new ArrayList<>();

        Family(final String help, final String type)
        {
            this.help = help;
            this.type = type;
        }
    }

    /** Declares family {@code name} of {@code type} (counter, gauge, histogram); its place is the order of first declaration. */
    Exposition declare(final String name, final String type, final String help)
    {
        families.putIfAbsent(name, new Family(help, type));
        return this;
    }

    /** A sample of a declared family; {@code labels} as name, value pairs; a null value is left out. */
    Exposition sample(final String name, final Object value, final String... labels)
    {
        if (value == null)
        {
            return this;
        }
        family(name).samples.add(name + labels(labels, null, null) + ' ' + number(value));
        return this;
    }

    /** {@code h} (microseconds) as histogram {@code name} with {@code labels}, bucket bounds {@code bounds} seconds. */
    Exposition histogram(final String name, final Histogram h, final double[] bounds, final String... labels)
    {
        final Family f = family(name);
        final long count = h.getTotalCount();
        for (final double le : bounds)
        {
            final long micros = (long)Math.floor(le * 1e6);
            final long n = count == 0 ? 0 : h.getCountBetweenValues(0, Math.min(micros, h.getHighestTrackableValue()));
            f.samples.add(name + "_bucket" + labels(labels, "le", number(le)) + ' ' + n);
        }
        f.samples.add(name + "_bucket" + labels(labels, "le", "+Inf") + ' ' + count);
        // HdrHistogram keeps 2 significant digits: the sum is the mean (of those values) times the count
        f.samples.add(name + "_sum" + labels(labels, null, null) + ' ' + number(count == 0 ? 0.0 : h.getMean() * count / 1e6));
        f.samples.add(name + "_count" + labels(labels, null, null) + ' ' + count);
        return this;
    }

    private Family family(final String name)
    {
        final Family f = families.get(name);
        if (f == null)
        {
            throw new IllegalArgumentException("metric family " + name + " was not declared");
        }
        return f;
    }

    private static String labels(final String[] pairs, final String extraName, final String extraValue)
    {
        if (pairs.length == 0 && extraName == null)
        {
            return "";
        }
        final StringBuilder b = new StringBuilder("{");
        for (int i = 0; i + 1 < pairs.length; i += 2)
        {
            b.append(b.length() == 1 ? "" : ",").append(pairs[i]).append("=\"").append(escape(pairs[i + 1])).append('"');
        }
        if (extraName != null)
        {
            b.append(b.length() == 1 ? "" : ",").append(extraName).append("=\"").append(extraValue).append('"');
        }
        return b.append('}').toString();
    }

    private static String escape(final String v)
    {
        return v == null ? "" : v.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n");
    }

    private static String number(final Object v)
    {
        if (v instanceof Double d)
        {
            return d.isInfinite() ? (d > 0 ? "+Inf" : "-Inf") : d.isNaN() ? "NaN" : String.format(Locale.ROOT, "%s", d);
        }
        if (v instanceof Boolean b)
        {
            return b ? "1" : "0";
        }
        return String.valueOf(v);
    }

    /** The text, family by family; families without samples are left out. */
    String render()
    {
        final StringBuilder b = new StringBuilder();
        families.forEach((name, f) ->
        {
            if (f.samples.isEmpty())
            {
                return;
            }
            b.append("# HELP ").append(name).append(' ').append(f.help).append('\n');
            b.append("# TYPE ").append(name).append(' ').append(f.type).append('\n');
            f.samples.forEach(s -> b.append(s).append('\n'));
        });
        return b.toString();
    }
}
