select
    vehicle_id,
    min(display_name) as display_name,
    string_agg(source, ', ' order by source) as sources,
    max(source_vehicle_id) filter (where source = 'avl') as avl_id,
    max(source_vehicle_id) filter (where source = 'autopi') as autopi_id,
    max(source_vehicle_id) filter (where source = 'kt1') as kt1_id,
    max(source_vehicle_id) filter (where source = 'metrotec') as metrotec_id
from {{ ref('dim_vehicles') }}
group by vehicle_id
order by vehicle_id
