"""GLSL 330 programs of the procedural-world renderer (see ``gst.data.synth.render``).

Vertex rows are (position, normal, object id) in world coordinates; id 0 is the ground.
"""

MAX_VIEWS_PER_DRAW = 64  # views drawn by one instanced call (uniform arrays below)

# One instance per view. Each view's clip position is squeezed into its tile of the atlas; the four
# clip distances are the tile's own frustum sides, so nothing spills into a neighbouring tile. This
# gives the same window coordinates as a per-view viewport (x_win = (x_ndc + 1) W / 2 + x0).
MAIN_VERT = """
#version 330
uniform mat4 u_mvp[64];   // clip from world per view: projection @ OpenCV->GL flip @ w2c
uniform vec4 u_tile[64];  // (W / AW, H / AH, (W + 2 x0) / AW - 1, (H + 2 y0) / AH - 1) per view
uniform vec4 u_zrow[64];  // third row of w2c per view: z_cam = dot(zrow.xyz, p) + zrow.w
uniform vec4 u_cam[64];   // camera centre per view (xyz), world
in vec3 in_pos;
in vec3 in_normal;
in float in_id;
out vec3 v_pos;
out vec3 v_normal;
out float v_zcam;
flat out vec3 v_cam;
flat out int v_id;
out float gl_ClipDistance[4];
void main() {
    int v = gl_InstanceID;
    vec4 c = u_mvp[v] * vec4(in_pos, 1.0);
    gl_ClipDistance[0] = c.w + c.x;
    gl_ClipDistance[1] = c.w - c.x;
    gl_ClipDistance[2] = c.w + c.y;
    gl_ClipDistance[3] = c.w - c.y;
    vec4 t = u_tile[v];
    gl_Position = vec4(c.x * t.x + c.w * t.z, c.y * t.y + c.w * t.w, c.z, c.w);
    v_pos = in_pos;
    v_normal = in_normal;
    v_zcam = dot(u_zrow[v].xyz, in_pos) + u_zrow[v].w;  // affine in position: interpolates exactly
    v_cam = u_cam[v].xyz;
    v_id = int(in_id + 0.5);
}
"""

MAIN_FRAG = """
#version 330
uniform vec3 u_colors[9];      // albedo of object i at index i + 1
uniform int u_pattern;         // index into GROUND_PATTERNS
uniform vec3 u_ground_a;
uniform vec3 u_ground_b;
uniform float u_period;
uniform vec2 u_pattern_dir;    // (cos, sin) of the pattern rotation
uniform vec3 u_light_dir;      // toward the light
uniform vec3 u_light_color;
uniform float u_ambient;
uniform vec3 u_sky;
uniform mat4 u_light_mvp;
uniform sampler2DShadow u_shadow;
in vec3 v_pos;
in vec3 v_normal;
in float v_zcam;
flat in vec3 v_cam;
flat in int v_id;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec2 f_geom;   // (metric z-depth, object id)

// Integer hash: identical on every GL implementation, unlike fract(sin(...)).
float hash(ivec2 c) {
    uint h = uint(c.x) * 374761393u + uint(c.y) * 668265263u;
    h = (h ^ (h >> 13u)) * 1274126177u;
    h ^= h >> 16u;
    return float(h & 0xffffu) / 65535.0;
}

float value_noise(vec2 q) {
    vec2 i = floor(q);
    vec2 f = fract(q);
    vec2 u = f * f * (3.0 - 2.0 * f);
    ivec2 c = ivec2(i);
    float a = hash(c), b = hash(c + ivec2(1, 0)), d = hash(c + ivec2(0, 1)), e = hash(c + ivec2(1, 1));
    return mix(mix(a, b, u.x), mix(d, e, u.x), u.y);
}

// Weight of colour b in the ground pattern at pattern coordinates q; `mean` is its area average.
float pattern(vec2 q, out float mean) {
    if (u_pattern == 0) { mean = 0.5; return mod(floor(q.x) + floor(q.y), 2.0); }
    if (u_pattern == 1) { mean = 0.5; return step(0.5, fract(q.x)); }
    if (u_pattern == 2) { mean = 0.5; return 0.65 * value_noise(q) + 0.35 * value_noise(2.7 * q + 17.0); }
    vec2 f = fract(q);
    mean = 0.19;
    return (min(f.x, f.y) < 0.1) ? 1.0 : 0.0;
}

void main() {
    mat2 rot = mat2(u_pattern_dir.x, u_pattern_dir.y, -u_pattern_dir.y, u_pattern_dir.x);
    vec2 q = rot * v_pos.xy / u_period;
    // Fade the pattern to its mean where a pixel spans a whole cell (far away): no moire.
    float footprint = max(length(dFdx(q)), length(dFdy(q)));
    float mean;
    float m = pattern(q, mean);
    m = mix(m, mean, smoothstep(0.3, 1.0, footprint));

    vec3 n = normalize(v_normal);
    vec3 view = normalize(v_cam - v_pos);
    if (dot(n, view) < 0.0) n = -n;  // two-sided: open meshes stay lit from behind
    vec3 albedo = (v_id == 0) ? mix(u_ground_a, u_ground_b, m) : u_colors[v_id];

    // Shadow map lookup; a normal offset of 2 cm and a 2 cm depth bias avoid self-shadowing acne.
    vec3 lc = (u_light_mvp * vec4(v_pos + 0.02 * n, 1.0)).xyz * 0.5 + 0.5;
    float lit = 1.0;
    if (all(greaterThan(lc, vec3(0.0))) && all(lessThan(lc, vec3(1.0)))) {
        lit = texture(u_shadow, vec3(lc.xy, lc.z - 0.00017));
    }
    vec3 L = normalize(u_light_dir);
    float diffuse = max(dot(n, L), 0.0) * lit;
    float spec = (v_id == 0) ? 0.0 : 0.25 * pow(max(dot(n, normalize(L + view)), 0.0), 40.0) * lit;
    vec3 ambient = u_ambient * mix(vec3(1.0), u_sky, 0.4);
    vec3 color = albedo * (ambient + diffuse * u_light_color) + spec * u_light_color;
    f_color = vec4(clamp(color, 0.0, 1.0), 1.0);
    f_geom = vec2(v_zcam, float(v_id));
}
"""

COVERAGE_FRAG = """
#version 330
flat in int v_id;
layout(location = 0) out vec4 f_cov0;  // objects 0-3
layout(location = 1) out vec4 f_cov1;  // objects 4-7
void main() {
    int k = v_id - 1;
    vec4 a = vec4(0.0);
    vec4 b = vec4(0.0);
    if (k < 4) a[k] = 1.0; else b[k - 4] = 1.0;
    f_cov0 = a;
    f_cov1 = b;
}
"""

SHADOW_VERT = """
#version 330
uniform mat4 u_mvp;  // light clip from world
in vec3 in_pos;
out float gl_ClipDistance[4];  // enabled context-wide for the atlas passes; keep everything here
void main() {
    for (int k = 0; k < 4; ++k) gl_ClipDistance[k] = 1.0;
    gl_Position = u_mvp * vec4(in_pos, 1.0);
}
"""

SHADOW_FRAG = """
#version 330
void main() {}
"""
