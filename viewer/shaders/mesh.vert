#version 330 core
// VimoRAG's lean body shader (vertex stage), used in place of pyrender's mesh.vert for the
// renderer's body mesh. Same inputs and outputs as far as our meshes need them: positions,
// normals and the per-instance model matrix. Model matrices here are rigid (rotation +
// translation), so normals are rotated by the matrix itself: no per-vertex matrix inverse, no
// tangent frame (the body has no normal map).
layout(location = 0) in vec3 position;
layout(location = NORMAL_LOC) in vec3 normal;
layout(location = INST_M_LOC) in mat4 inst_m;

uniform mat4 M;
uniform mat4 V;
uniform mat4 P;

out vec3 frag_position;
out vec3 frag_normal;

void main()
{
    mat4 world = M * inst_m;
    vec4 p = world * vec4(position, 1.0);
    gl_Position = P * (V * p);
    frag_position = p.xyz;
    frag_normal = mat3(world) * normal;
}
