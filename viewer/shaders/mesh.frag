#version 330 core
// VimoRAG's lean body shader (fragment stage): an untextured dielectric (metallic 0) lit by
// directional lights and ambient light, with the usual microfacet model (GGX distribution,
// Smith-Schlick visibility with k = (r + 1)^2 / 8, Schlick Fresnel with F0 = 0.04) and a
// 1/2.2 gamma, i.e. the picture pyrender's general shader gives such a material, without its
// texture, shadow, point- and spot-light paths.
struct DirectionalLight {
    vec3 color;
    float intensity;
    vec3 direction;
};

struct Material {
    vec4 base_color_factor;
    float roughness_factor;
};

uniform Material material;
uniform DirectionalLight directional_lights[MAX_DIRECTIONAL_LIGHTS];
uniform int n_directional_lights;
uniform vec3 cam_pos;
uniform vec3 ambient_light;

in vec3 frag_position;
in vec3 frag_normal;

out vec4 frag_color;

const float PI = 3.141592653589793;
const float F0 = 0.04;

void main()
{
    vec3 albedo = material.base_color_factor.rgb;
    vec3 diffuse = albedo * (1.0 - F0) / PI;
    float r = clamp(material.roughness_factor, 0.04, 1.0);
    float a2 = r * r * r * r;
    float k = (r + 1.0) * (r + 1.0) / 8.0;

    vec3 n = normalize(frag_normal);
    vec3 v = normalize(cam_pos - frag_position);
    float nv = clamp(abs(dot(n, v)), 0.001, 1.0);
    float gv = nv / (nv * (1.0 - k) + k);

    vec3 color = vec3(0.0);
    for (int i = 0; i < n_directional_lights; i++) {
        vec3 l = normalize(-directional_lights[i].direction);
        vec3 h = normalize(l + v);
        float nl = clamp(dot(n, l), 0.001, 1.0);
        float nh = clamp(dot(n, h), 0.0, 1.0);
        float vh = clamp(dot(v, h), 0.0, 1.0);
        float fresnel = F0 + (1.0 - F0) * pow(1.0 - vh, 5.0);
        float g = gv * (nl / (nl * (1.0 - k) + k));
        float den = nh * nh * (a2 - 1.0) + 1.0;
        float d = a2 / (PI * den * den);
        vec3 brdf = (1.0 - fresnel) * diffuse + vec3(fresnel * g * d / (4.0 * nl * nv + 0.001));
        color += nl * directional_lights[i].intensity * directional_lights[i].color * brdf;
    }
    color += albedo * ambient_light;
    frag_color = clamp(vec4(pow(color, vec3(1.0 / 2.2)), material.base_color_factor.a), 0.0, 1.0);
}
