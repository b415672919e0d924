package dev.colod.core.protocol;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What must be the same about a VM on both hosts for a checkpoint of one to run on the other (QEMU refuses a
 * device state from a different machine, and a failover then finds out at the worst moment): accelerator, RAM,
 * vCPUs, its NICs' MACs in order. (How it boots is not: a checkpoint carries the booted guest; nor the disk's size, which
 * the secondary checks when the disk's base arrives, naming the file, and which an operator may fix while colod runs.) Carried in the control HELLO as {@code key=value}
 * pairs separated by spaces (docs/PROTOCOL.md, "HELLO"); compared by the secondary before it accepts a session.
 */
public final class VmShape
{
    private VmShape()
    {
    }

    /** The text form of {@code pairs}, in their order. */
    public static String of(final Map<String, String> pairs)
    {
        final StringBuilder b = new StringBuilder();
        pairs.forEach((k, v) -> b.append(b.length() == 0 ? "" : " ").append(k).append('=').append(v));
        return b.toString();
    }

    static Map<String, String> parse(final String shape)
    {
        final Map<String, String> m = new LinkedHashMap<>();
        for (final String pair : shape.trim().split(" +"))
        {
            final int eq = pair.indexOf('=');
            if (eq > 0)
            {
                m.put(pair.substring(0, eq), pair.substring(eq + 1));
            }
        }
        return m;
    }

    /**
     * Every key whose value differs between {@code secondary}'s shape and {@code primary}'s, each with both values
     * ("memory-mib: 256 on the secondary, 128 on the primary"); empty when they agree. A key only one side knows (a
     * newer build) is not compared.
     */
    public static List<String> differences(final String secondary, final String primary)
    {
        final Map<String, String> s = parse(secondary);
        final Map<String, String> p = parse(primary);
        final List<String> out = new ArrayList<>();
        s.forEach((k, v) ->
        {
            final String theirs = p.get(k);
            if (theirs != null && !theirs.equals(v))
            {
                out.add(k + ": " + v + " on the secondary, " + theirs + " on the primary");
            }
        });
        return out;
    }
}
