# emulator.cmake: the emulator's C unit tests (test_emu_*.c), each an
# executable registered with ctest. Included from emulator/CMakeLists.txt and
# optionally again from tests/c/CMakeLists.txt; the guard keeps it idempotent.
get_property(_sbus_emu_tests_done GLOBAL PROPERTY SBUS_EMU_TESTS_DONE)
if(_sbus_emu_tests_done)
  return()
endif()
set_property(GLOBAL PROPERTY SBUS_EMU_TESTS_DONE TRUE)
get_filename_component(_sbus_emu_root ${CMAKE_CURRENT_LIST_DIR}/../.. ABSOLUTE)
file(GLOB SBUS_EMU_TEST_SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_emu_*.c)
foreach(src ${SBUS_EMU_TEST_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE sbus_emulator_core)
  target_compile_options(${name} PRIVATE -Wall -Wextra)
  target_compile_definitions(${name} PRIVATE SBUS_SOURCE_ROOT="${_sbus_emu_root}")
  add_test(NAME ${name} COMMAND ${name})
endforeach()
