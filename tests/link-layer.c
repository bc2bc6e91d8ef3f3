/* Linked with one layer's whole static library and only the layers below
 * it (tests/meson.build): it builds only while no file of that layer calls
 * a function of a layer above. */
int main(void) { return 0; }
