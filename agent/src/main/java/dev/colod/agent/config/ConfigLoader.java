package dev.colod.agent.config;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.exc.InvalidFormatException;
import com.fasterxml.jackson.databind.exc.MismatchedInputException;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.colod.agent.disk.ImageFiles;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.buffer.BufferLimits;
import dev.colod.core.ColoConfig;
import dev.colod.core.InvalidSettingException;
import dev.colod.core.protocol.VmShape;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Consumer;
import java.util.function.Supplier;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

/**
 * Reads colod.yaml into {@link ColodConfig} and validates it in one place. Every refusal says file, line,
 * column, the field (as a path like {@code vms[0].nics[1].mac}) and why: an unknown key, a wrong type, a
 * missing field or an impossible value.
 */
public final class ConfigLoader
{
    private static final Pattern MAC = Pattern.compile("(?i)[0-9a-f]{2}(:[0-9a-f]{2}){5}");
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,62}");
    /** host:port, an IPv6 address in brackets ([::1]:9477); the port 1..65535 (checked by {@link #socketAddress}). */
    private static final Pattern HOST_PORT = Pattern.compile("([^\\s:\\[\\]]+|\\[[0-9A-Fa-f:.]+\\]):([1-9]\\d{0,4})");
    /** Whether {@code v} is host:port with a port of 1..65535. */
    private static boolean hostPort(final String v)
    {
        final java.util.regex.Matcher m = HOST_PORT.matcher(v);
        return m.matches() && Integer.parseInt(m.group(2)) <= 65_535;
    }

    /** The address of a checked host:port ({@code [v6]:port} too). */
    public static java.net.InetSocketAddress socketAddress(final String hostPort)
    {
        final int colon = hostPort.lastIndexOf(':');
        String host = hostPort.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]"))
        {
            host = host.substring(1, host.length() - 1);
        }
        return new java.net.InetSocketAddress(host, Integer.parseInt(hostPort.substring(colon + 1)));
    }

    private static final Pattern ETCD_URL = Pattern.compile("https?://[^\\s:/]+:\\d{1,5}");

    private final String file;
    private final String text;
    private final Map<String, JsonLocation> locations = new HashMap<>();
    /** Every problem found by {@link #validate}, reported together. */
    private final List<ConfigException> errors = new ArrayList<>();

    private ConfigLoader(final String file, final String text)
    {
        this.file = file;
        this.text = text;
    }

    public static ColodConfig load(final Path path) throws ConfigException
    {
        final String text;
        try
        {
            text = Files.readString(path);
        }
        catch (final IOException ex)
        {
            throw new ConfigException(path.toString(), 0, 0, "cannot read: " + ex.getMessage());
        }
        return parse(path.toString(), text);
    }

    public static ColodConfig parse(final String file, final String text) throws ConfigException
    {
        return new ConfigLoader(file, text).run();
    }

    private ColodConfig run() throws ConfigException
    {
        final YAMLFactory yaml = new YAMLFactory();
        final ObjectMapper mapper = com.fasterxml.jackson.databind.json.JsonMapper.builder(yaml)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
            .disable(com.fasterxml.jackson.databind.MapperFeature.ALLOW_COERCION_OF_SCALARS)
            .enable(com.fasterxml.jackson.databind.MapperFeature.ACCEPT_CASE_INSENSITIVE_ENUMS).build();
        // binding problems (unknown keys, wrong types, values outside an enum) are recorded and skipped, so one run
        // names all of them; the semantic checks run only on a file that bound cleanly
        final BindingProblems problems = new BindingProblems();
        mapper.addHandler(problems);
        mapper.registerModule(problems.scalars());
        final ColodConfig c;
        try
        {
            recordLocations(yaml);
            c = mapper.readValue(text, ColodConfig.class);
            if (!errors.isEmpty())
            {
                errors.sort(java.util.Comparator.comparingInt(ConfigException::line).thenComparingInt(ConfigException::column));
                throw ConfigException.all(errors);
            }
        }
        catch (final JsonProcessingException ex)
        {
            // one that stops binding (YAML syntax, an instantiation check): with what was recorded before it
            final ConfigException stop = bindingError(ex);
            if (errors.isEmpty())
            {
                throw stop;
            }
            errors.add(stop);
            errors.sort(java.util.Comparator.comparingInt(ConfigException::line).thenComparingInt(ConfigException::column));
            throw ConfigException.all(errors);
        }
        if (c == null)
        {
            throw new ConfigException(file, 1, 1, "the file is empty");
        }
        validate(c);
        return c;
    }

    /** The message of a binding problem that stopped binding, at its key. */
    private ConfigException bindingError(final JsonProcessingException processing)
    {
        try
        {
            throw processing;
        }
        catch (final UnrecognizedPropertyException ex)
        {
            final Set<String> known = ex.getKnownPropertyIds().stream().map(Object::toString).collect(Collectors.toCollection(TreeSet::new));
            final String owner = where(ex);
            final JsonLocation keyAt = locations.get(("the top level".equals(owner) ? "" : owner + ".") + ex.getPropertyName());
            return at(keyAt != null ? keyAt : ex.getLocation(), "unknown key '" + ex.getPropertyName() + "' in " + owner + " (known keys: " +
                String.join(", ", known) + ")");
        }
        catch (final InvalidFormatException ex)
        {
            if (ex.getTargetType() != null && ex.getTargetType().isEnum())
            {
                final String p = path(ex);
                final JsonLocation keyAt = locations.get(p);
                return at(keyAt != null ? keyAt : ex.getLocation(), "invalid " + p + ": must be " +
                    choices(ex.getTargetType()) + ", was '" + ex.getValue() + "'");
            }
            return at(ex.getLocation(), "wrong type for " + path(ex) + ": '" + ex.getValue() + "' is not " +
                typeName(ex.getTargetType()));
        }
        catch (final com.fasterxml.jackson.databind.exc.ValueInstantiationException ex)
        {
            final String p = path(ex);
            final JsonLocation keyAt = locations.get(p);
            return at(keyAt != null ? keyAt : ex.getLocation(), "invalid " + p + ": " +
                (ex.getCause() != null ? ex.getCause().getMessage() : ex.getOriginalMessage()));
        }
        catch (final MismatchedInputException ex)
        {
            return at(ex.getLocation(), "wrong type for " + path(ex) + ": '" + valueAt(ex.getLocation()) + "' is not " +
                typeName(ex.getTargetType()));
        }
        catch (final JsonProcessingException ex)
        {
            return at(ex.getLocation(), "not valid YAML: " + ex.getOriginalMessage());
        }
    }

    /** The key path of the parser's current place: {@code vms[0].nics[1].mac}. */
    private static String pathOf(final com.fasterxml.jackson.core.JsonStreamContext context, final String last)
    {
        final Deque<String> parts = new ArrayDeque<>();
        if (last != null)
        {
            parts.push(last);
        }
        for (com.fasterxml.jackson.core.JsonStreamContext x = context; x != null && !x.inRoot(); x = x.getParent())
        {
            if (x.inArray())
            {
                final String head = parts.isEmpty() ? "" : parts.pop();
                parts.push("[" + Math.max(0, x.getCurrentIndex()) + "]" + (head.isEmpty() ? "" : head.startsWith("[")
                    ? head : "." + head));
            }
            else if (x.getCurrentName() != null && x != context)
            {
                final String head = parts.isEmpty() ? "" : parts.pop();
                parts.push(x.getCurrentName() + (head.isEmpty() ? "" : head.startsWith("[") ? head : "." + head));
            }
        }
        return parts.isEmpty() ? "" : parts.pop();
    }

    /** Reads a scalar the parser is on. */
    private interface Reader<T>
    {
        T read(JsonParser p) throws IOException;
    }

    /** Records each binding problem where it is (as the first-error messages said it) and skips the value. */
    private final class BindingProblems extends com.fasterxml.jackson.databind.deser.DeserializationProblemHandler
    {
        /** Where the value being read sits: the object's path plus its key. */
        private String valuePath(final JsonParser p)
        {
            final com.fasterxml.jackson.core.JsonStreamContext c = p.getParsingContext();
            final com.fasterxml.jackson.core.JsonStreamContext owner = c.inObject() ? c : c.getParent();
            final String key = owner != null && owner.inObject() ? owner.getCurrentName() : null;
            return pathOf(owner, key);
        }

        /** At the key (an unknown key, a value outside its choices), as the single-error messages were. */
        private void record(final JsonParser p, final String path, final String message)
        {
            final JsonLocation keyAt = locations.get(path);
            errors.add(at(keyAt != null ? keyAt : p.currentTokenLocation(), message));
        }

        /** At the value (a wrong type). */
        private void recordAtValue(final JsonParser p, final String message)
        {
            errors.add(at(p.currentTokenLocation(), message));
        }

        @Override
        public boolean handleUnknownProperty(final com.fasterxml.jackson.databind.DeserializationContext ctxt,
            final JsonParser p, final com.fasterxml.jackson.databind.JsonDeserializer<?> deserializer,
            final Object beanOrClass, final String propertyName) throws IOException
        {
            final String owner = pathOf(p.getParsingContext(), null);
            final Set<String> known = new TreeSet<>();
            deserializer.getKnownPropertyNames().forEach(k -> known.add(String.valueOf(k)));
            record(p, (owner.isEmpty() ? "" : owner + ".") + propertyName, "unknown key '" + propertyName + "' in " +
                (owner.isEmpty() ? "the top level" : owner) + " (known keys: " + String.join(", ", known) + ")");
            p.skipChildren();
            return true;
        }

        @Override
        public Object handleWeirdStringValue(final com.fasterxml.jackson.databind.DeserializationContext ctxt,
            final Class<?> targetType, final String value, final String failureMsg)
        {
            return weird(ctxt.getParser(), targetType, value);
        }

        @Override
        public Object handleWeirdNumberValue(final com.fasterxml.jackson.databind.DeserializationContext ctxt,
            final Class<?> targetType, final Number value, final String failureMsg)
        {
            return weird(ctxt.getParser(), targetType, value);
        }

        /** A value outside an enum's choices (at its key) or of another type (at the value); read as the type's zero. */
        private Object weird(final JsonParser p, final Class<?> targetType, final Object value)
        {
            final String path = valuePath(p);
            if (targetType.isEnum())
            {
                record(p, path, "invalid " + path + ": must be " + choices(targetType) + ", was '" + value + "'");
            }
            else
            {
                recordAtValue(p, "wrong type for " + path + ": '" + value + "' is not " + typeName(targetType));
            }
            return defaultFor(targetType);
        }

        @Override
        public Object handleUnexpectedToken(final com.fasterxml.jackson.databind.DeserializationContext ctxt,
            final com.fasterxml.jackson.databind.JavaType targetType, final JsonToken t, final JsonParser p,
            final String failureMsg) throws IOException
        {
            final String path = valuePath(p);
            final String shown = t == JsonToken.START_OBJECT || t == JsonToken.START_ARRAY ? "(a nested value)"
                : p.getText();
            recordAtValue(p, "wrong type for " + path + ": '" + shown + "' is not " + typeName(targetType.getRawClass()));
            p.skipChildren();
            return defaultFor(targetType.getRawClass());
        }

        /**
         * Whole numbers and booleans read strictly (a string, a fraction or a nested value where one belongs is
         * recorded with its place and read as 0 or false; the file is refused anyway), so that binding goes on.
         */
        com.fasterxml.jackson.databind.Module scalars()
        {
            final com.fasterxml.jackson.databind.module.SimpleModule m = new com.fasterxml.jackson.databind.module.SimpleModule();
            m.addDeserializer(Integer.class, scalar(Integer.class, JsonToken.VALUE_NUMBER_INT, p -> p.getIntValue()));
            m.addDeserializer(int.class, scalar(int.class, JsonToken.VALUE_NUMBER_INT, p -> p.getIntValue()));
            m.addDeserializer(Long.class, scalar(Long.class, JsonToken.VALUE_NUMBER_INT, p -> p.getLongValue()));
            m.addDeserializer(long.class, scalar(long.class, JsonToken.VALUE_NUMBER_INT, p -> p.getLongValue()));
            return m;
        }

        private <T> com.fasterxml.jackson.databind.JsonDeserializer<T> scalar(final Class<?> type, final JsonToken wanted,
            final Reader<T> read)
        {
            return new com.fasterxml.jackson.databind.JsonDeserializer<>()
            {
                @Override
                @SuppressWarnings("unchecked")
                public T deserialize(final JsonParser p, final com.fasterxml.jackson.databind.DeserializationContext ctxt)
                    throws IOException
                {
                    if (p.currentToken() == wanted)
                    {
                        if (type == int.class || type == Integer.class)
                        {
                            final long v = p.getLongValue();
                            if (v != (int)v)
                            {
                                final String path = valuePath(p);
                                recordAtValue(p, "wrong type for " + path + ": '" + p.getText() + "' is not " +
                                    typeName(type) + " of at most " + Integer.MAX_VALUE);
                                return (T)defaultFor(type);
                            }
                        }
                        return read.read(p);
                    }
                    final String path = valuePath(p);
                    final String shown = p.currentToken() == JsonToken.START_OBJECT || p.currentToken() == JsonToken.START_ARRAY
                        ? "(a nested value)" : p.getText();
                    recordAtValue(p, "wrong type for " + path + ": '" + shown + "' is not " + typeName(type));
                    p.skipChildren();
                    return (T)defaultFor(type);
                }
            };
        }

        /** What a skipped value becomes: the type's zero (the file is refused anyway). */
        private Object defaultFor(final Class<?> t)
        {
            if (t == int.class || t == Integer.class)
            {
                return 0;
            }
            if (t == long.class || t == Long.class)
            {
                return 0L;
            }
            if (t == boolean.class || t == Boolean.class)
            {
                return false;
            }
            if (t == double.class || t == Double.class)
            {
                return 0.0;
            }
            return null;
        }
    }

    /** Walks the YAML once to remember where each key path sits, for errors found after binding. */
    private void recordLocations(final YAMLFactory yaml) throws JsonProcessingException
    {
        try (JsonParser p = yaml.createParser(text))
        {
            final Deque<String> stack = new ArrayDeque<>();
            final Deque<Integer> index = new ArrayDeque<>();
            String field = null;
            JsonToken t;
            while ((t = p.nextToken()) != null)
            {
                switch (t)
                {
                    case FIELD_NAME:
                        field = p.currentName();
                        locations.put(join(stack, field), p.currentTokenLocation());
                        break;
                    case START_OBJECT:
                    case START_ARRAY:
                    {
                        final String seg = segment(stack, index, field);
                        stack.push(seg);
                        if (!seg.isEmpty())
                        {
                            locations.putIfAbsent(join(stack, null), p.currentTokenLocation());
                        }
                        index.push(t == JsonToken.START_ARRAY ? 0 : -1);
                        field = null;
                        break;
                    }
                    case END_OBJECT:
                    case END_ARRAY:
                        stack.pop();
                        index.pop();
                        if (!index.isEmpty() && index.peek() >= 0)
                        {
                            index.push(index.pop() + 1);
                        }
                        field = null;
                        break;
                    default:
                        if (!index.isEmpty() && index.peek() >= 0 && field == null)
                        {
                            index.push(index.pop() + 1);
                        }
                        field = null;
                }
            }
        }
        catch (final JsonProcessingException ex)
        {
            throw ex;
        }
        catch (final IOException ex)
        {
            throw new IllegalStateException(ex);
        }
    }

    private static String segment(final Deque<String> stack, final Deque<Integer> index, final String field)
    {
        if (field != null)
        {
            return field;
        }
        if (!index.isEmpty() && index.peek() >= 0)
        {
            return "[" + index.peek() + "]";
        }
        return "";
    }

    private static String join(final Deque<String> stack, final String last)
    {
        final StringBuilder b = new StringBuilder();
        final var it = stack.descendingIterator();
        while (it.hasNext())
        {
            final String s = it.next();
            if (s.isEmpty())
            {
                continue;
            }
            if (b.length() > 0 && !s.startsWith("["))
            {
                b.append('.');
            }
            b.append(s);
        }
        if (last != null)
        {
            if (b.length() > 0)
            {
                b.append('.');
            }
            b.append(last);
        }
        return b.toString();
    }

    /** What the other host's colod compares before it accepts a session for this VM. */
    static String shape(final ColodConfig.Vm v)
    {
        final Map<String, String> m = new LinkedHashMap<>();
        m.put("accel", v.accel.name().toLowerCase());
        m.put("memory-mib", Integer.toString(v.memoryMib));
        m.put("vcpus", Integer.toString(v.vcpus));
        m.put("nics", v.nics.stream().map(n -> n.mac == null ? "?" : n.mac.toLowerCase()).collect(Collectors.joining(",")));
        if (v.firmware == ColodConfig.Firmware.UEFI)
        {
            m.put("firmware", "uefi:" + digest(v.uefiCode));
        }
        if (!v.disks.isEmpty())
        {
            // sizes are checked when a checkpoint's disk table arrives; a backing file's content only here
            m.put("disks", v.disks.stream().map(d -> d == null ? "?" : d.format.name().toLowerCase() + ":" + backing(d))
                .collect(Collectors.joining(",")));
        }
        return VmShape.of(m);
    }

    /** A file's digest ({@link ImageFiles#digest}), or "?" when it cannot be read. */
    private static String digest(final String file)
    {
        try
        {
            return file == null ? "?" : ImageFiles.digest(Path.of(file));
        }
        catch (final IOException | RuntimeException ex)
        {
            return "?";
        }
    }

    /** A qcow2 disk's backing chain digest ({@link ImageFiles#backingDigest}), or none; "?" when it cannot be read. */
    private static String backing(final ColodConfig.Disk d)
    {
        try
        {
            return d.image == null ? "?" : ImageFiles.backingDigest(Path.of(d.image), VmSpec.DiskFormat.valueOf(d.format.name()));
        }
        catch (final IOException | RuntimeException ex)
        {
            return "?";
        }
    }

    /**
     * The disks' total size in bytes (0 without one), after checking each: {@code disk:} is shorthand for one entry of
     * {@code disks:} (both at once is refused), an image is an absolute path to a regular file in its format, and
     * every disk is replicated or none.
     */
    private long validateDisks(final ColodConfig.Vm v, final String p) throws ConfigException
    {
        String at = p + ".disks";
        if (v.disk != null)
        {
            if (!check(v.disks.isEmpty() || v.disks.size() == 1 && v.disks.get(0) == v.disk, p + ".disk",
                "give disk: (one disk) or disks: (a list), not both"))
            {
                return 0;
            }
            v.disks.clear();
            v.disks.add(v.disk);
            at = p + ".disk";
        }
        check(v.disks.size() <= VmSpec.MAX_DISKS, at, "at most " + VmSpec.MAX_DISKS + " disks, was " + v.disks.size());
        long total = 0;
        for (int i = 0; i < v.disks.size(); i++)
        {
            final String q = v.disk != null ? at : at + "[" + i + "]";
            final ColodConfig.Disk d = v.disks.get(i);
            if (d == null)
            {
                errors.add(at(locations.get(q), q + ": an empty entry (give image:)"));
                continue;
            }
            total += validateDisk(d, q);
            check(d.replicate == v.disks.get(0).replicate, q + ".replicate",
                "must be the same for every disk of a VM (a failover resumes all of them together)");
            check(v.mode != ColoConfig.Mode.HYBRID || d.format == ColodConfig.DiskFormat.RAW, q + ".format",
                "hybrid mode runs its copy on a qcow2 overlay of the committed image, which a qcow2 image under " +
                "writes cannot back safely yet: use format: raw, or mode: periodic or speculative");
        }
        return total;
    }

    /** The UEFI variable store's size (0 for BIOS), after checking the firmware's files. */
    private long validateFirmware(final ColodConfig.Vm v, final String p) throws ConfigException
    {
        if (v.firmware != ColodConfig.Firmware.UEFI)
        {
            check(v.uefiVars == null, p + ".uefi-vars", "needs firmware: uefi");
            return 0;
        }
        if (check(v.uefiCode != null && v.uefiCode.startsWith("/"), p + ".uefi-code", "must be an absolute path, was '" +
            v.uefiCode + "'"))
        {
            check(Files.isRegularFile(Path.of(v.uefiCode)), p + ".uefi-code", v.uefiCode + " does not exist (Debian: " +
                "apt-get install ovmf)");
        }
        if (v.uefiVars == null)
        {
            errors.add(at(locations.get(p), "missing field " + p + ".uefi-vars (this VM's UEFI variable store: cp " +
                "/usr/share/OVMF/OVMF_VARS_4M.fd /var/lib/colod/" + v.name + "/uefi-vars.fd)"));
            return 0;
        }
        if (!check(v.uefiVars.startsWith("/"), p + ".uefi-vars", "must be an absolute path, was '" + v.uefiVars + "'") ||
            !check(Files.isRegularFile(Path.of(v.uefiVars)), p + ".uefi-vars", v.uefiVars + " does not exist (copy the " +
                "firmware's template: cp /usr/share/OVMF/OVMF_VARS_4M.fd " + v.uefiVars + ")"))
        {
            return 0;
        }
        try
        {
            final long size = Files.size(Path.of(v.uefiVars));
            check(size > 0 && size % 4096 == 0, p + ".uefi-vars", v.uefiVars + " is " + size + " bytes; a variable " +
                "store is a copy of the firmware's template (OVMF_VARS_4M.fd: 540672 bytes)");
            return size;
        }
        catch (final IOException ex)
        {
            check(false, p + ".uefi-vars", "cannot read " + v.uefiVars + ": " + ex.getMessage());
            return 0;
        }
    }

    /** One disk's guest-visible size in bytes (0 when it cannot be read), after checking its image. */
    private long validateDisk(final ColodConfig.Disk d, final String q) throws ConfigException
    {
        require(d.image, q, "image");
        check(d.earlyCheckpointMib >= 0 && d.earlyCheckpointMib <= 1 << 20, q + ".early-checkpoint-mib",
            "must be 0 (never early)..1048576, was " + d.earlyCheckpointMib);
        if (!check(d.image.startsWith("/"), q + ".image", "must be an absolute path, was '" + d.image + "'"))
        {
            return 0;
        }
        final Path img = Path.of(d.image);
        final String create = d.format == ColodConfig.DiskFormat.QCOW2 ? "qemu-img create -f qcow2 " + d.image + " 10G"
            : "truncate -s 10G " + d.image;
        if (!check(Files.exists(img), q + ".image", d.image + " does not exist (create it, e.g. with " + create + ")") ||
            !check(Files.isRegularFile(img), q + ".image", d.image +
            " is not a regular file (image files only; block devices are not supported yet)"))
        {
            return 0;
        }
        try
        {
            final boolean qcow2 = ImageFiles.isQcow2(img);
            if (d.format == ColodConfig.DiskFormat.RAW)
            {
                // QEMU would boot a raw disk that holds a qcow2 image as what it is: the guest sees qcow2 metadata
                check(!qcow2, q + ".format", d.image + " is a qcow2 image; say format: qcow2");
            }
            else if (!check(qcow2, q + ".format", d.image + " is not a qcow2 image (no qcow2 header); say format: raw"))
            {
                return 0;
            }
            final long size = ImageFiles.virtualSize(img, VmSpec.DiskFormat.valueOf(d.format.name()));
            check(size > 0 && size % 512 == 0, q + ".image", d.image + " is " + size +
                " bytes (as the guest sees it); a disk is a positive multiple of 512 bytes");
            if (qcow2)
            {
                final Path backing = ImageFiles.backingFile(img);
                check(backing == null || Files.isRegularFile(backing), q + ".image", d.image + " names backing file " +
                    backing + ", which does not exist here");
            }
            return size;
        }
        catch (final IOException ex)
        {
            check(false, q + ".image", "cannot read " + d.image + ": " + ex.getMessage());
            return 0;
        }
    }

    /**
     * Every problem of the file, in file order, in one exception (an operator fixes them all in one go); a missing
     * field or a value an earlier problem left unusable ends only the part it is in (one VM, the TLS block, ...).
     */
    private void validate(final ColodConfig c) throws ConfigException
    {
        part(() -> validateTop(c));
        part(() -> validateArbiter(c));
        part(() -> validateTls(c));
        final Set<String> names = new HashSet<>();
        for (int i = 0; i < c.vms.size(); i++)
        {
            final int vi = i;
            part(() -> validateVm(c.vms.get(vi), "vms[" + vi + "]", names));
        }
        if (!errors.isEmpty())
        {
            errors.sort(java.util.Comparator.comparingInt(ConfigException::line).thenComparingInt(ConfigException::column));
            throw ConfigException.all(errors);
        }
    }

    /** One part of the validation. */
    private interface Part
    {
        void run() throws ConfigException;
    }

    /** Thrown by {@link #require} after recording the missing field: the rest of its part cannot be checked. */
    private static final class Missing extends RuntimeException
    {
        Missing()
        {
            super(null, null, false, false);
        }
    }

    private void part(final Part part) throws ConfigException
    {
        try
        {
            part.run();
        }
        catch (final Missing ex)
        {
            // recorded; the rest of this part depends on the missing value
        }
        catch (final NullPointerException ex)
        {
            if (errors.isEmpty())
            {
                throw ex; // not a consequence of a recorded problem: a bug, not a configuration error
            }
        }
    }

    private void validateTop(final ColodConfig c) throws ConfigException
    {
        check(c.runtimeDir != null && c.runtimeDir.startsWith("/"), "runtime-dir", "must be an absolute path");
        check(c.metricsListen != null && (c.metricsListen.isEmpty() || hostPort(c.metricsListen)),
            "metrics-listen", "must be empty (off) or host:port such as 127.0.0.1:9477, was '" + c.metricsListen + "'");
        check(c.ramDir != null && c.ramDir.startsWith("/"), "ram-dir", "must be an absolute path");
        check(c.hugepageDir != null && c.hugepageDir.startsWith("/"), "hugepage-dir", "must be an absolute path");
        check(c.stateDir != null && c.stateDir.startsWith("/"), "state-dir", "must be an absolute path");
        check(!c.vms.isEmpty(), "vms", "at least one VM is needed");
    }

    private void validateVm(final ColodConfig.Vm v, final String p, final Set<String> names) throws ConfigException
    {
        require(v.name, p, "name");
        check(NAME.matcher(v.name).matches(), p + ".name", "must match " + NAME.pattern() + ", was '" + v.name + "'");
        check(names.add(v.name), p + ".name", "VM '" + v.name + "' is configured twice");
        require(v.role, p, "role");
        require(v.peer, p, "peer");
        check(hostPort(v.peer), p + ".peer", "must be host:port, was '" + v.peer + "'");
        check(v.listen == null || hostPort(v.listen), p + ".listen",
            "must be host:port (this host's replication address), was '" + v.listen + "'");
        check(v.listen == null || !v.listen.equals(v.peer), p + ".listen",
            "must differ from peer (with listen set, peer is the other host's address), was '" + v.listen + "'");
        check(v.memoryMib >= 16 && v.memoryMib <= 1 << 20, p + ".memory-mib",
            "must be 16..1048576 (1 TiB), was " + v.memoryMib);
        final long ramBytes = (long)v.memoryMib << 20;
        check(v.ramPageSize != ColodConfig.RamPageSize.PAGE_2M || v.memoryMib % 2 == 0, p + ".memory-mib",
            "must be a multiple of 2 with ram-page-size: 2m (whole 2 MiB pages), was " + v.memoryMib);
        final long diskBytes = validateDisks(v, p) + validateFirmware(v, p);
        check(v.maxStateBytes == null || v.maxStateBytes == 0 || v.maxStateBytes >= ramBytes, p + ".max-state-bytes",
            "must be 0 (RAM + disk size + 64 MiB) or at least the RAM size " + ramBytes + ", was " + v.maxStateBytes);
        check(v.vcpus >= 1 && v.vcpus <= 256, p + ".vcpus", "must be 1..256, was " + v.vcpus);
        check(v.writeAuditPages >= 0 && v.writeAuditPages <= 1 << 20, p + ".write-audit-pages",
            "must be 0 (no audit)..1048576, was " + v.writeAuditPages);
        // without kernel: QEMU boots the disk (its bootloader); with neither there is nothing to boot
        if (v.disks.isEmpty() && (v.role == ColodConfig.Role.PRIMARY || v.kernel != null))
        {
            if (v.kernel == null)
            {
                errors.add(at(locations.get(p), "missing field " + p + ".kernel (or a disk: to boot from)"));
            }
        }
        check(v.kernel != null || v.initrd == null, p + ".initrd", "needs kernel (a VM that boots from its disk " +
            "takes its initramfs from there)");
        check(v.kernel != null || v.append == null, p + ".append", "needs kernel (a VM that boots from its disk " +
            "takes its command line from its bootloader)");
        v.engine(conclude(p, () ->
        {
            final ColoConfig e = new ColoConfig().vmName(v.name)
                .maxStateBytes(v.maxStateBytes == null || v.maxStateBytes == 0 ? ramBytes + diskBytes + (64L << 20)
                    : v.maxStateBytes);
            set(v.mode, e::mode);
            set(v.checkpointDelayMs, e::checkpointDelayMs);
            set(v.heartbeatIntervalMs, e::heartbeatIntervalMs);
            set(v.heartbeatTimeoutMs, e::heartbeatTimeoutMs);
            set(v.peerRestartGraceMs, e::peerRestartGraceMs);
            set(v.outputTrigger, e::outputTrigger);
            set(v.maxPausedPercent, e::maxPausedPercent);
            set(v.minCheckpointGapMs, e::minCheckpointGapMs);
            set(v.outputLingerUs, e::outputLingerUs);
            set(v.compareTimeoutMs, e::compareTimeoutMs);
            set(v.httpDateToleranceMs, e::httpDateToleranceMs);
            e.vmShape(shape(v));
            return e.conclude();
        }));
        check(!v.nics.isEmpty(), p + ".nics", "at least one NIC is needed");
        for (int n = 0; n < v.nics.size(); n++)
        {
            final ColodConfig.Nic nic = v.nics.get(n);
            final String q = p + ".nics[" + n + "]";
            require(nic.tap, q, "tap");
            check(nic.tap.length() <= 12, q + ".tap", "must be 1..12 characters (agent taps add 3), was '" + nic.tap + "'");
            require(nic.mac, q, "mac");
            check(MAC.matcher(nic.mac).matches(), q + ".mac", "must be a MAC like 52:54:00:12:34:56, was '" + nic.mac + "'");
            require(nic.bridge, q, "bridge");
            check(v.mode != ColoConfig.Mode.HYBRID || nic.buffer == ColodConfig.Buffer.TAP, q + ".buffer",
                "hybrid mode compares the frames the TAP backend reads: use buffer: tap, was " +
                nic.buffer.name().toLowerCase());
            if (nic.buffer == ColodConfig.Buffer.NFQUEUE)
            {
                check(nic.queueNum >= 0 && nic.queueNum <= 65_535, q + ".queue-num",
                    "must be 0..65535 (and unique on this host) with buffer: nfqueue, was " + nic.queueNum);
            }
            nic.limits(conclude(q, () ->
            {
                final BufferLimits l = new BufferLimits();
                set(nic.maxFrames, l::maxFrames);
                set(nic.maxBytes, l::maxBytes);
                set(nic.highWaterPercent, l::highWaterPercent);
                set(nic.policy, l::policy);
                return l.conclude();
            }));
        }
    }

    private void validateTls(final ColodConfig c) throws ConfigException
    {
        if (c.tls == null)
        {
            if (!c.insecure)
            {
                errors.add(at(locations.get("tls"), "missing field tls: give the PEM files (tls: {ca: ..., cert: ..., " +
                    "key: ...}; `coloctl certs` makes a lab CA) or set 'insecure: true' for plaintext replication (labs only)"));
            }
            return;
        }
        check(!c.insecure, "insecure", "cannot be true together with tls");
        for (final String[] f : new String[][]{{"ca", c.tls.ca}, {"cert", c.tls.cert}, {"key", c.tls.key}})
        {
            require(f[1], "tls", f[0]);
            check(f[1].startsWith("/"), "tls." + f[0], "must be an absolute path, was '" + f[1] + "'");
        }
    }

    private void validateArbiter(final ColodConfig c) throws ConfigException
    {
        if (c.arbiter == null)
        {
            errors.add(at(locations.get("arbiter"), "missing field arbiter: give the etcd endpoints (arbiter: {etcd: " +
                "[http://host:2379]}) or 'arbiter: none' for a lab (a partition then runs two copies of each VM)"));
            return;
        }
        final ColodConfig.Arbiter a = c.arbiter;
        check(c.hostName != null && (c.hostName.isEmpty() || NAME.matcher(c.hostName).matches()), "host-name",
            "must match " + NAME.pattern() + " (or be empty: the system's host name), was '" + c.hostName + "'");
        if (a.none())
        {
            return;
        }
        check(!a.etcd.isEmpty(), "arbiter.etcd", "at least one etcd endpoint (http://host:port) is needed, or 'arbiter: none'");
        for (int i = 0; i < a.etcd.size(); i++)
        {
            final String e = a.etcd.get(i);
            check(e != null && ETCD_URL.matcher(e).matches(), "arbiter.etcd[" + i + "]",
                "must be http://host:port or https://host:port, was '" + e + "'");
            check(!e.startsWith("https:") || a.ca != null, "arbiter.etcd[" + i + "]",
                "is https: arbiter.ca (the etcd cluster's CA, PEM) is needed");
        }
        check(a.leaseTtlMs >= 2000 && a.leaseTtlMs <= 60_000, "arbiter.lease-ttl-ms",
            "must be 2000..60000 (etcd grants whole seconds, at least 2), was " + a.leaseTtlMs);
        check(a.safetyMarginMs >= 100 && a.safetyMarginMs * 2 <= a.leaseTtlMs, "arbiter.safety-margin-ms",
            "must be 100..lease-ttl-ms/2, was " + a.safetyMarginMs);
        check(a.requestTimeoutMs >= 50 && a.requestTimeoutMs <= 10_000, "arbiter.request-timeout-ms",
            "must be 50..10000, was " + a.requestTimeoutMs);
        check((a.cert == null) == (a.key == null), "arbiter.cert",
            "arbiter.cert and arbiter.key go together (a client certificate and its key)");
        for (final String[] f : new String[][]{{"ca", a.ca}, {"cert", a.cert}, {"key", a.key}})
        {
            check(f[1] == null || f[1].startsWith("/"), "arbiter." + f[0], "must be an absolute path, was '" + f[1] + "'");
        }
        check(a.prefix != null && a.prefix.startsWith("/") && !a.prefix.endsWith("/"), "arbiter.prefix",
            "must start with '/' and not end with one, was '" + a.prefix + "'");
    }

    private static <T> void set(final T value, final Consumer<T> setter)
    {
        if (value != null)
        {
            setter.accept(value);
        }
    }

    /** Runs a component's own {@code conclude()}; a refused field is reported at its line under {@code parent}. */
    private <T> T conclude(final String parent, final Supplier<T> concluded) throws ConfigException
    {
        try
        {
            return concluded.get();
        }
        catch (final InvalidSettingException ex)
        {
            check(false, parent + "." + ex.field(), ex.reason());
            return null; // recorded: the file is refused, so nothing uses the missing value
        }
    }

    /** The choices of an enum as the YAML spells them: "a, b or c". */
    private static String choices(final Class<?> type)
    {
        final Object[] values = type.getEnumConstants();
        final StringBuilder b = new StringBuilder();
        for (int i = 0; i < values.length; i++)
        {
            if (i > 0)
            {
                b.append(i == values.length - 1 ? " or " : ", ");
            }
            final String name = ((Enum<?>)values[i]).name();
            JsonProperty named = null;
            try
            {
                named = type.getField(name).getAnnotation(JsonProperty.class);
            }
            catch (final NoSuchFieldException ex)
            {
                // an enum constant is always a field
            }
            b.append(named != null ? named.value() : name.toLowerCase().replace('_', '-'));
        }
        return b.toString();
    }

    /** Records a missing field and ends the part it is in (what follows would use the value). */
    private void require(final Object value, final String parent, final String field)
    {
        if (value == null)
        {
            final JsonLocation l = locations.get(parent);
            errors.add(at(l, "missing field " + parent + "." + field));
            throw new Missing();
        }
    }

    /** Records {@code why} at {@code path}'s line unless {@code ok}; returns {@code ok}. */
    private boolean check(final boolean ok, final String path, final String why)
    {
        if (!ok)
        {
            JsonLocation l = locations.get(path);
            String p = path;
            while (l == null && p.contains("."))
            {
                p = p.substring(0, p.lastIndexOf('.'));
                l = locations.get(p);
            }
            errors.add(at(l, "invalid " + path + ": " + why));
        }
        return ok;
    }

    /** The text of the value at {@code l}, to quote it back. */
    private String valueAt(final JsonLocation l)
    {
        if (l == null || l.getLineNr() < 1)
        {
            return "?";
        }
        final String[] lines = text.split("\n", -1);
        if (l.getLineNr() > lines.length)
        {
            return "?";
        }
        final String line = lines[l.getLineNr() - 1];
        final int from = Math.min(Math.max(0, l.getColumnNr() - 1), line.length());
        final String v = line.substring(from).trim();
        return v.isEmpty() ? "(a nested value)" : v;
    }

    private ConfigException at(final JsonLocation l, final String message)
    {
        return new ConfigException(file, l == null ? 1 : l.getLineNr(), l == null ? 1 : l.getColumnNr(), message);
    }

    private static String path(final JsonMappingException ex)
    {
        final StringBuilder b = new StringBuilder();
        for (final JsonMappingException.Reference r : ex.getPath())
        {
            if (r.getFieldName() != null)
            {
                if (b.length() > 0)
                {
                    b.append('.');
                }
                b.append(r.getFieldName());
            }
            else
            {
                b.append('[').append(r.getIndex()).append(']');
            }
        }
        return b.length() == 0 ? "the top level" : b.toString();
    }

    private static String where(final JsonMappingException ex)
    {
        final String p = path(ex);
        final int dot = p.lastIndexOf('.');
        return dot < 0 ? "the top level" : p.substring(0, dot);
    }

    private static String typeName(final Class<?> t)
    {
        if (t == null)
        {
            return "the expected type";
        }
        if (t == int.class || t == Integer.class || t == long.class || t == Long.class)
        {
            return "a whole number";
        }
        if (t == String.class)
        {
            return "a string";
        }
        if (t == boolean.class || t == Boolean.class)
        {
            return "true or false";
        }
        if (List.class.isAssignableFrom(t))
        {
            return "a list";
        }
        return "a " + t.getSimpleName().toLowerCase() + " mapping";
    }
}
